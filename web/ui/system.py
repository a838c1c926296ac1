"""Health: liveness and readiness probes for load balancers, and a health page for people."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, jsonify, render_template

from cdp.db import db
from cdp.jobs import recent_jobs
from cdp.queue import PERIODIC_JOBS, tasks
from web.extensions import csrf, limiter
from web.session_auth import requires

bp = Blueprint("system", __name__)


def readiness() -> dict:
    """Check the database and (when configured) Redis; each is True when reachable."""
    checks = {}
    try:
        db.session.execute(sa.text("SELECT 1"))
        checks["database"] = True
    except sa.exc.SQLAlchemyError:
        db.session.rollback()
        checks["database"] = False
    task_queue = tasks()
    if not task_queue.embedded:
        try:
            checks["redis"] = bool(task_queue.connection.ping())
        except Exception:  # any connection failure means "not ready"
            checks["redis"] = False
    return checks


@bp.route("/healthz")
@csrf.exempt
@limiter.exempt
def healthz():
    """Liveness: the process answers."""
    return jsonify(status="ok")


@bp.route("/readyz")
@csrf.exempt
@limiter.exempt
def readyz():
    """Readiness: 200 when the database (and Redis, if configured) are reachable, else 503."""
    checks = readiness()
    ok = all(checks.values())
    return jsonify(status="ok" if ok else "unavailable", checks=checks), (200 if ok else 503)


@bp.route("/system/health")
@requires("jobs:view")
def health():
    """Show readiness, queue depths, periodic jobs and recent job runs."""
    task_queue = tasks()
    queues = []
    for q in task_queue.all_queues():
        try:
            queues.append((q.name, q.count, q.failed_job_registry.count))
        except Exception:
            queues.append((q.name, None, None))
    return render_template(
        "system/health.html",
        checks=readiness(),
        embedded=task_queue.embedded,
        queues=queues,
        periodic=list(PERIODIC_JOBS.values()),
        jobs=recent_jobs(limit=20),
    )
