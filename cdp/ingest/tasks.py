"""Downstream hand-off of committed events: processors run per outbox batch, exactly once each."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import sqlalchemy as sa

from cdp.db import db, utcnow
from cdp.models import Event, OutboxBatch, Source
from cdp.queue import enqueue, task
from cdp.sweeper import register_sweep_hook

# name -> fn(event_ids, profile_ids); segments and journeys register theirs. Must be idempotent.
EVENT_PROCESSORS: dict[str, Callable[[list[int], list[int]], object]] = {}
STALE_AFTER = timedelta(minutes=2)


def register_event_processor(name: str, fn: Callable[[list[int], list[int]], object]) -> None:
    EVENT_PROCESSORS[name] = fn


@task
def process_batch(outbox_id: int) -> str:
    """Run every event processor on one committed batch, then mark it processed."""
    batch = db.session.get(OutboxBatch, outbox_id)
    if batch is None or batch.processed_at is not None:
        return "nothing to do"
    for fn in EVENT_PROCESSORS.values():
        fn(list(batch.event_ids), list(batch.profile_ids))
    last = db.session.scalar(
        sa.select(sa.func.max(Event.received_at)).where(Event.id.in_(batch.event_ids))
    )
    source = db.session.get(Source, batch.source_id)
    if source is not None and last is not None:
        if source.last_event_at is None or last > source.last_event_at:
            source.last_event_at = last
    batch.processed_at = utcnow()
    batch.attempts += 1
    db.session.commit()
    return "processed"


def requeue_stale_batches(limit: int = 1000) -> int:
    """Sweep hook: enqueue again batches whose job was lost (Redis flushed, worker died)."""
    cutoff = utcnow() - STALE_AFTER
    stale = db.session.scalars(
        sa.select(OutboxBatch.id)
        .where(
            OutboxBatch.processed_at.is_(None),
            sa.or_(OutboxBatch.enqueued_at.is_(None), OutboxBatch.enqueued_at < cutoff),
        )
        .order_by(OutboxBatch.id)
        .limit(limit)
    ).all()
    for batch_id in stale:
        enqueue(process_batch, batch_id, queue="ingest")
    if stale:
        db.session.execute(
            sa.update(OutboxBatch).where(OutboxBatch.id.in_(stale)).values(enqueued_at=utcnow())
        )
        db.session.commit()
    return len(stale)


def init_app(app) -> None:
    register_sweep_hook("ingest-outbox", requeue_stale_batches)
