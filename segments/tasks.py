"""Refresh jobs: on demand (CLI, UI, API) and scheduled, with progress in a JobRun.

The scheduled job runs every few minutes and refreshes the segments that are due (never
computed, or older than their interval: 60 minutes for rules that depend on time, a day
otherwise); it reads what is due from the database, so a lost Redis only delays it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import sqlalchemy as sa

from cdp import audit, jobs
from cdp.actors import SYSTEM, Actor
from cdp.auth.permissions import require
from cdp.db import db, transaction, utcnow
from cdp.models import JobRun
from cdp.queue import PeriodicJob, enqueue, task
from segments.membership import RefreshResult, enqueue_outbox, refresh
from segments.models import Segment

JOB_KIND = "segments-refresh"
PERIODIC = PeriodicJob(
    name="segments-refresh", func="segments.tasks.refresh_due", interval=300, queue="segments"
)
TIME_BASED_MINUTES, DEFAULT_MINUTES = 60, 24 * 60

Progress = Callable[[int, int, str], None]


def due_segments(now=None) -> list[int]:
    now = now or utcnow()
    due = []
    for segment in db.session.scalars(
        sa.select(Segment).where(Segment.status == "active").order_by(Segment.id)
    ):
        minutes = segment.refresh_minutes or (
            TIME_BASED_MINUTES if segment.time_based else DEFAULT_MINUTES
        )
        if segment.refreshed_at is None or segment.refreshed_at + timedelta(minutes=minutes) <= now:
            due.append(segment.id)
    return due


def _active_ids(segment_ids: list[int] | None) -> list[int]:
    query = sa.select(Segment.id).where(Segment.status == "active").order_by(Segment.id)
    if segment_ids is not None:
        query = query.where(Segment.id.in_(segment_ids))
    return list(db.session.scalars(query))


def create_refresh_job(actor: Actor, segment_ids: list[int] | None = None) -> JobRun:
    """A JobRun for refreshing some (or all active) segments; audited."""
    require(actor, "segments:edit")
    ids = _active_ids(segment_ids)
    job = jobs.create_job(actor, JOB_KIND, {"segment_ids": ids}, total=len(ids))
    with transaction():
        audit.record(actor, "segment.refresh", "job", job.id, segments=ids)
    return job


def start_refresh(actor: Actor, segment_ids: list[int] | None = None) -> JobRun:
    """Create the job and hand it to a worker (queue ``segments``)."""
    job = create_refresh_job(actor, segment_ids)
    enqueue(refresh_job, job.id, queue="segments")
    return job


def run_refresh(
    job_id: int, segment_ids: list[int], progress: Progress | None = None, reason="refresh"
) -> list[RefreshResult]:
    """Refresh each segment in its own transaction, reporting progress on the JobRun."""
    jobs.mark_running(job_id, len(segment_ids))
    results, failed = [], []
    for done, segment_id in enumerate(segment_ids, start=1):
        segment = db.session.get(Segment, segment_id)
        if segment is None or segment.status != "active":
            continue
        try:
            with transaction():
                result = refresh(segment, reason=reason)
        except Exception as exc:  # one broken segment must not stop the others
            failed.append(segment_id)
            message = f"#{segment_id}: failed: {exc.__class__.__name__}: {exc}"[:300]
        else:
            enqueue_outbox(result.outbox_ids)
            results.append(result)
            message = (
                f"#{segment_id} {segment.name}: {result.size} members, "
                f"+{result.entered} −{result.exited} in {result.ms:.0f} ms"
            )
        jobs.report_progress(job_id, done, message)
        if progress is not None:
            progress(done, len(segment_ids), message)
    summary = f"{len(results)} segments refreshed"
    if failed:
        summary += f"; failed: {', '.join(f'#{i}' for i in failed)}"
    jobs.mark_finished(job_id, summary, failed=bool(failed))
    return results


@task
def refresh_job(job_id: int) -> str:
    job = db.session.get(JobRun, job_id)
    if job is None or job.status in ("succeeded", "failed"):
        return "nothing to do"
    run_refresh(job.id, list(job.params.get("segment_ids", [])))
    return "refreshed"


@task
def refresh_due() -> int:
    """Periodic: refresh the segments that are due."""
    due = due_segments()
    if due:
        job = jobs.create_job(SYSTEM, JOB_KIND, {"segment_ids": due, "scheduled": True}, len(due))
        run_refresh(job.id, due, reason="scheduled")
    return len(due)


def recent_refresh_jobs(segment_id: int | None = None, limit: int = 5) -> list[JobRun]:
    query = sa.select(JobRun).where(JobRun.kind == JOB_KIND).order_by(JobRun.id.desc())
    found = []
    for job in db.session.scalars(query.limit(100)):
        if segment_id is None or segment_id in (job.params or {}).get("segment_ids", []):
            found.append(job)
        if len(found) == limit:
            break
    return found
