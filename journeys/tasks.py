"""The engine's jobs: run what is due (instances, then their deliveries), sweep, fire schedules.

The database is the source of truth: due instances are found through the ``next_run_at``
index (O(due), not O(all)) and due deliveries through ``next_attempt_at``, so work queued
in a Redis that was lost is found again by the periodic sweep.

Like the ingest drain, one ``run_due`` job works through everything due in batches rather
than one job per instance: under load a job then carries hundreds of instances, and the
fixed cost of a job is paid once. ``kick()`` makes sure one such job is queued and not yet
started; the sweep queues more of them when the backlog is large, for parallel workers.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

import sqlalchemy as sa

from cdp.db import db, lock_for_writing, utcnow
from cdp.queue import PeriodicJob, enqueue, task, tasks
from journeys.engine import delivery, runner, schedule
from journeys.models import Delivery, JourneyInstance
from journeys.settings import setting

log = logging.getLogger(__name__)
I = JourneyInstance.__table__  # noqa: E741
D = Delivery.__table__
QUEUED_KEY = "cdp:journeys:run-queued"
QUEUED_TTL = 60  # bounds the marker's life if the job it announces was never queued
RUN_SECONDS = 20.0  # then the job queues its successor, letting other jobs run
MAX_PARALLEL = 4  # run_due jobs the sweep queues for a large backlog


def kick(force: bool = False) -> None:
    """After commit: make sure a ``run_due`` job that has not started yet is queued."""
    try:
        connection = tasks().connection
        if not connection.set(QUEUED_KEY, "1", nx=not force, ex=QUEUED_TTL):
            return  # the queued job will find the new work: it claims only after starting
        try:
            enqueue(run_due, queue="journeys")
        except Exception:
            connection.delete(QUEUED_KEY)
            raise
    except Exception:  # Redis unavailable: the sweep finds the work in the database
        log.warning("journeys: could not queue a run; the sweep will pick the work up")


def claim_due(now, limit: int | None = None) -> list[int]:
    """Lease due instances (oldest first) so that no other run takes them meanwhile."""
    limit = limit or int(setting("JOURNEY_BATCH"))
    session = db.session
    lock_for_writing(session, wait_ms=30_000)
    due = (
        sa.select(I.c.id)
        .where(I.c.next_run_at <= now, sa.or_(I.c.lease_until.is_(None), I.c.lease_until < now))
        .order_by(I.c.next_run_at)
        .limit(limit)
    )
    until = now + timedelta(seconds=int(setting("JOURNEY_LEASE_SECONDS")))
    ids = session.scalars(
        sa.update(I).where(I.c.id.in_(due.scalar_subquery())).values(lease_until=until)
        .returning(I.c.id)
    ).all()  # fmt: skip
    session.commit()
    return sorted(ids)


def due_deliveries(now, limit: int | None = None) -> list[int]:
    limit = limit or int(setting("JOURNEY_BATCH"))
    return list(
        db.session.scalars(
            sa.select(D.c.id)
            .where(D.c.next_attempt_at <= now, D.c.status == "pending")
            .order_by(D.c.next_attempt_at)
            .limit(limit)
        )
    )


def run_once(now=None) -> dict:
    """One batch: advance due instances, then perform the deliveries that are due."""
    now = now or utcnow()
    instance_ids = claim_due(now)
    advanced = runner.advance(instance_ids, now=now) if instance_ids else {"advanced": 0}
    performed = delivery.perform(due_deliveries(now), now)
    db.session.commit()
    return {"advanced": advanced["advanced"], "performed": sum(performed.values())}


@task
def run_due() -> dict:
    """Work through everything due, batch by batch (the job ``kick`` queues)."""
    tasks().connection.delete(QUEUED_KEY)  # from now on, new work queues a new job
    deadline = time.monotonic() + RUN_SECONDS
    totals = {"advanced": 0, "performed": 0}
    while True:
        result = run_once()
        for key in totals:
            totals[key] += result[key]
        if not any(result.values()):
            break
        if time.monotonic() > deadline:
            kick(force=True)
            break
    return totals


@task
def sweep() -> dict:
    """Recover deliveries whose worker died; queue runs for whatever is due."""
    now = utcnow()
    stale = list(
        db.session.scalars(
            sa.select(D.c.id)
            .where(D.c.next_attempt_at <= now, D.c.status == "sending")
            .limit(int(setting("JOURNEY_BATCH")))
        )
    )
    recovered = delivery.recover(stale, now) if stale else {}
    batch = int(setting("JOURNEY_BATCH"))
    due = db.session.scalar(
        sa.select(sa.func.count()).select_from(
            sa.select(I.c.id)
            .where(I.c.next_run_at <= now, sa.or_(I.c.lease_until.is_(None), I.c.lease_until < now))
            .limit(batch * MAX_PARALLEL)
            .subquery()
        )
    )
    due_sends = len(due_deliveries(now, limit=1))
    runs = min(MAX_PARALLEL, -(-due // batch)) or (1 if due_sends else 0)
    if runs:
        kick(force=True)
        for _ in range(runs - 1):
            enqueue(run_due, queue="journeys")
    return {"due": due, "runs": runs, "recovered": recovered}


@task
def fire_schedules() -> dict:
    result = schedule.fire_due()
    if result:
        kick()
    return result


def periodic_jobs(sweep_seconds: int) -> list[PeriodicJob]:
    return [
        PeriodicJob("journeys-sweep", "journeys.tasks.sweep", sweep_seconds, queue="journeys"),
        PeriodicJob("journeys-schedules", "journeys.tasks.fire_schedules", 60, queue="journeys"),
    ]
