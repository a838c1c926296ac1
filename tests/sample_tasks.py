"""Tasks used by the queue tests (importable by dotted path, as RQ requires)."""

import os
import time

import sqlalchemy as sa

from cdp.db import db
from cdp.models import JobRun
from cdp.queue import task


@task
def record(kind: str, payload: dict) -> int:
    """Store one JobRun named ``kind`` unless it already exists (idempotent by kind)."""
    existing = db.session.scalar(sa.select(JobRun.id).where(JobRun.kind == kind))
    if existing:
        return existing
    job = JobRun(kind=kind, params=payload, status="succeeded")
    db.session.add(job)
    db.session.commit()
    return job.id


@task
def slow_record(kind: str, marker_path: str, seconds: float) -> int:
    """Announce start in ``marker_path`` (pid), sleep, then record: a job to kill mid-way."""
    with open(marker_path, "a") as marker:
        marker.write(f"{os.getpid()}\n")
    time.sleep(seconds)
    return record(kind, {"slow": True})


@task
def fail_always() -> None:
    raise RuntimeError("this task always fails")
