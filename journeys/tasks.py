"""The engine's jobs: advance instances, perform deliveries, sweep what is due, fire schedules.

Jobs take ids and are idempotent. The database is the source of truth: the sweeper finds
due instances through the ``next_run_at`` index (O(due), not O(all)) and deliveries
through ``next_attempt_at``, so work queued in a Redis that was lost is found again.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import sqlalchemy as sa

from cdp.db import db, lock_for_writing, utcnow
from cdp.queue import PeriodicJob, enqueue, task
from journeys.engine import delivery, runner, schedule
from journeys.models import Delivery, JourneyInstance
from journeys.settings import setting

log = logging.getLogger(__name__)
I = JourneyInstance.__table__  # noqa: E741
D = Delivery.__table__
SWEEP_LIMIT = 50_000  # instances claimed per sweep; the next sweep takes the rest


def _chunks(ids: list[int]):
    size = int(setting("JOURNEY_BATCH"))
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def queue_advance(instance_ids: list[int]) -> None:
    """After commit: advance these instances soon (the sweeper would find them anyway)."""
    try:
        for chunk in _chunks(sorted(set(instance_ids))):
            enqueue(advance_instances, chunk, queue="journeys")
    except Exception:  # Redis unavailable: the sweeper picks them up from the database
        log.warning("journeys: could not queue %d instances", len(instance_ids))


def queue_deliveries(delivery_ids: list[int]) -> None:
    try:
        for chunk in _chunks(sorted(set(delivery_ids))):
            enqueue(perform_deliveries, chunk, queue="delivery")
    except Exception:
        log.warning("journeys: could not queue %d deliveries", len(delivery_ids))


@task
def advance_instances(instance_ids: list[int]) -> dict:
    result = runner.advance(instance_ids)
    queue_deliveries(result.pop("delivery_ids"))
    return result


@task
def perform_deliveries(delivery_ids: list[int]) -> dict:
    return delivery.perform(delivery_ids)


def claim_due(now, limit: int = SWEEP_LIMIT) -> list[int]:
    """Lease the due instances (oldest first) so the next sweep does not queue them again."""
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


@task
def sweep() -> dict:
    """Queue every due instance and delivery; recover deliveries whose worker died."""
    now = utcnow()
    instance_ids = claim_due(now)
    queue_advance(instance_ids)
    rows = db.session.execute(
        sa.select(D.c.id, D.c.status)
        .where(D.c.next_attempt_at <= now)
        .order_by(D.c.next_attempt_at)
        .limit(SWEEP_LIMIT)
    ).all()
    stale = [row_id for row_id, status in rows if status == "sending"]
    recovered = delivery.recover(stale, now) if stale else {}
    pending = [row_id for row_id, status in rows if status == "pending"]
    queue_deliveries(pending + ([*stale] if recovered.get("pending") else []))
    return {"instances": len(instance_ids), "deliveries": len(pending), "recovered": recovered}


@task
def fire_schedules() -> dict:
    return schedule.fire_due()


def periodic_jobs(sweep_seconds: int) -> list[PeriodicJob]:
    return [
        PeriodicJob("journeys-sweep", "journeys.tasks.sweep", sweep_seconds, queue="journeys"),
        PeriodicJob("journeys-schedules", "journeys.tasks.fire_schedules", 60, queue="journeys"),
    ]
