"""Job runs: a database record of each long job's status and progress, for the CLI and UI."""

from __future__ import annotations

import sqlalchemy as sa

from cdp.actors import Actor
from cdp.db import db, utcnow
from cdp.models.jobs import JobRun


def _commit_update(job_id: int, **values) -> None:
    # Progress is written in its own short transaction so readers see it while the job runs.
    with db.engine.begin() as conn:
        conn.execute(sa.update(JobRun).where(JobRun.id == job_id).values(**values))


def create_job(actor: Actor, kind: str, params: dict | None = None, total=None) -> JobRun:
    job = JobRun(kind=kind, params=params or {}, total=total, created_by_id=actor.user_id)
    db.session.add(job)
    db.session.commit()
    return job


def mark_running(job_id: int, total: int | None = None) -> None:
    _commit_update(job_id, status="running", started_at=utcnow(), total=total)


def report_progress(job_id: int, done: int, message: str = "") -> None:
    _commit_update(job_id, progress=done, message=message)


def mark_finished(job_id: int, message: str = "", failed: bool = False) -> None:
    _commit_update(
        job_id, status="failed" if failed else "succeeded", finished_at=utcnow(), message=message
    )


def recent_jobs(limit: int = 20) -> list[JobRun]:
    return list(db.session.scalars(sa.select(JobRun).order_by(JobRun.id.desc()).limit(limit)))
