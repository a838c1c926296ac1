"""Downstream hand-off of committed events: processors run on every outbox batch, once each.

Each committed batch has an outbox row, written in its own transaction. Rather than one
RQ job per batch (RQ runs some hundreds of jobs a second per worker, and ingestion commits
more batches than that), ``hand_off()`` makes sure one ``process_pending`` job is queued
and not yet started: that job processes every pending batch, in id order, so it serves
all the batches committed before it started. A Redis key marks "a drain job is queued";
the job deletes it as it starts, so a batch committed after that queues the next job.

A batch is processed by whoever claims it: one UPDATE bumps ``attempts`` and stamps
``enqueued_at`` on the oldest unclaimed pending rows (PostgreSQL: ``FOR UPDATE SKIP
LOCKED``, so concurrent drain jobs take different batches; SQLite: the statement holds
the write lock). Claims are not held in a transaction, because processors commit as they
go; a claim older than CLAIM_TTL (its worker died, or the batch failed) can be taken again.
Processors must be idempotent: a batch whose worker died half-way is processed again.
The sweeper queues a drain job whenever a batch waited longer than STALE_AFTER (Redis lost
the job, or a claim expired), so nothing committed is left behind.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta

import sqlalchemy as sa

from cdp.db import db, utcnow
from cdp.models import Event, InboundBatch, OutboxBatch, Source
from cdp.queue import enqueue, task, tasks
from cdp.sweeper import register_sweep_hook

log = logging.getLogger(__name__)

# name -> fn(event_ids, profile_ids); segments and journeys register theirs. Must be idempotent.
EVENT_PROCESSORS: dict[str, Callable[[list[int], list[int]], object]] = {}
# Deferred ingestion (cdp.ingest.inbound): fn() resolves a claimed chunk of inbound batches
# into events and outbox batches and returns how many it took (0: none pending).
INBOUND_RESOLVERS: list[Callable[[], int]] = []
STALE_AFTER = timedelta(minutes=2)
CLAIM_TTL = STALE_AFTER
QUEUED_KEY = "cdp:ingest:drain-queued"
# Bounds the marker's life if the job it announces was never queued (a crash in between).
QUEUED_TTL = 60
CLAIM_CHUNK = 10  # batches claimed at a time by one drain job
DRAIN_SECONDS = 30.0  # then the job queues its successor, letting other queues' jobs run
FAILURES_IN_A_ROW = 3  # then the cause is likely not the batch (database down): stop
_OUTBOX = OutboxBatch.__table__


def register_event_processor(name: str, fn: Callable[[list[int], list[int]], object]) -> None:
    EVENT_PROCESSORS[name] = fn


def register_inbound_resolver(fn: Callable[[], int]) -> None:
    if fn not in INBOUND_RESOLVERS:
        INBOUND_RESOLVERS.append(fn)


def hand_off(force: bool = False) -> None:
    """After committing outbox batches: make sure a drain job that has not started is queued."""
    connection = tasks().connection
    if not connection.set(QUEUED_KEY, "1", nx=not force, ex=QUEUED_TTL):
        return  # a queued job will see the batch: it claims batches only after it starts
    try:
        enqueue(process_pending, queue="ingest")
    except Exception:
        connection.delete(QUEUED_KEY)
        raise


def _claimable(now):
    return sa.and_(
        _OUTBOX.c.processed_at.is_(None),
        sa.or_(
            _OUTBOX.c.attempts == 0,
            _OUTBOX.c.enqueued_at.is_(None),
            _OUTBOX.c.enqueued_at < now - CLAIM_TTL,
        ),
    )


def claim_rows(table: sa.Table, claimable, stamp: str, limit: int, only_id=None) -> list[int]:
    """Claim the oldest ``claimable`` rows of a work table: bump ``attempts``, set ``stamp``.

    Commits the claim. PostgreSQL skips rows another claimer holds locked; on SQLite the
    UPDATE holds the write lock.
    """
    session = db.session
    pending = sa.select(table.c.id).where(claimable).order_by(table.c.id).limit(limit)
    if only_id is not None:
        pending = pending.where(table.c.id == only_id)
    if session.get_bind().dialect.name == "postgresql":
        pending = pending.with_for_update(skip_locked=True)
    claimed = session.execute(
        sa.update(table)
        .where(table.c.id.in_(pending.scalar_subquery()))
        .values({"attempts": table.c.attempts + 1, stamp: utcnow()})
        .returning(table.c.id)
    ).scalars()
    ids = sorted(claimed)
    session.commit()
    return ids


def claim(limit: int = CLAIM_CHUNK, outbox_id: int | None = None) -> list[int]:
    """Claim the oldest claimable pending batches (or just ``outbox_id``); commits the claim."""
    return claim_rows(_OUTBOX, _claimable(utcnow()), "enqueued_at", limit, outbox_id)


def _process(*outbox_ids: int) -> None:
    """Run every event processor once on the claimed batches together, then mark them processed.

    Under load the ingest pipeline commits many small batches; processing a claimed chunk as
    one unit pays each processor's fixed cost (plans, queries, commits) once per chunk.
    """
    batches = [
        batch
        for batch in (db.session.get(OutboxBatch, outbox_id) for outbox_id in outbox_ids)
        if batch is not None and batch.processed_at is None
    ]
    if not batches:
        return
    event_ids = [event_id for batch in batches for event_id in batch.event_ids]
    profile_ids = sorted({pid for batch in batches for pid in batch.profile_ids})
    for fn in EVENT_PROCESSORS.values():
        fn(list(event_ids), list(profile_ids))
    for source_id in {batch.source_id for batch in batches}:
        ids = [e for batch in batches if batch.source_id == source_id for e in batch.event_ids]
        last = db.session.scalar(sa.select(sa.func.max(Event.received_at)).where(Event.id.in_(ids)))
        source = db.session.get(Source, source_id)
        if source is not None and last is not None:
            if source.last_event_at is None or last > source.last_event_at:
                source.last_event_at = last
    now = utcnow()
    for batch in batches:
        batch.processed_at = now
    db.session.commit()


@task
def process_pending() -> dict:
    """Process every pending outbox batch in id order (the drain job ``hand_off`` queues)."""
    tasks().connection.delete(QUEUED_KEY)  # from now on, a new batch queues a new job
    deadline = time.monotonic() + DRAIN_SECONDS
    processed, failed, in_a_row = 0, 0, 0
    while in_a_row < FAILURES_IN_A_ROW:
        if time.monotonic() > deadline:
            hand_off(force=True)  # batches may remain: queue the next drain job, end this one
            break
        resolved = sum(resolve() for resolve in INBOUND_RESOLVERS)
        ids = claim()
        if not ids:
            if resolved:
                continue
            break
        if len(ids) > 1:
            try:
                _process(*ids)
                processed, in_a_row = processed + len(ids), 0
                continue
            except Exception:  # one of them is at fault: find which, one at a time
                db.session.rollback()
        for n, outbox_id in enumerate(ids):
            try:
                _process(outbox_id)
            except Exception:
                db.session.rollback()
                failed, in_a_row = failed + 1, in_a_row + 1
                # Its claim stays: it is tried again once the claim expires (CLAIM_TTL).
                log.exception("outbox batch %s failed; retried after %s", outbox_id, CLAIM_TTL)
                if in_a_row >= FAILURES_IN_A_ROW:
                    _release(ids[n + 1 :])
                    break
                continue
            processed, in_a_row = processed + 1, 0
    if failed:
        raise RuntimeError(f"{failed} outbox batch(es) failed (processed {processed})")
    return {"processed": processed}


def _release(ids: list[int]) -> None:
    """Give back claims not worked on, so the next drain job takes them at once."""
    if ids:
        db.session.execute(
            sa.update(_OUTBOX)
            .where(_OUTBOX.c.id.in_(ids), _OUTBOX.c.processed_at.is_(None))
            .values(enqueued_at=None)
        )
        db.session.commit()


@task
def process_batch(outbox_id: int) -> str:
    """Process one committed batch (for callers that enqueue a batch by id)."""
    if not claim(1, outbox_id):
        return "nothing to do"  # processed already, or claimed by a drain job
    try:
        _process(outbox_id)
    except Exception:
        db.session.rollback()
        _release([outbox_id])  # the job's retry (or a drain job) takes it again
        raise
    return "processed"


def _count(table: sa.Table, where, limit: int) -> int:
    """Rows of ``table`` matching ``where``, counting at most ``limit`` of them."""
    rows = sa.select(table.c.id).where(where).limit(limit).subquery()
    return db.session.scalar(sa.select(sa.func.count()).select_from(rows))


def requeue_stale_batches(limit: int = 1000) -> int:
    """Sweep hook: queue a drain job if batches waited too long (Redis lost it, a worker died).

    Outbox batches not processed, and inbound batches (deferred resolution) never claimed
    or whose claim expired.
    """
    cutoff = utcnow() - STALE_AFTER
    inbound = InboundBatch.__table__
    stale = _count(
        _OUTBOX,
        sa.and_(
            _OUTBOX.c.processed_at.is_(None),
            sa.or_(_OUTBOX.c.enqueued_at.is_(None), _OUTBOX.c.enqueued_at < cutoff),
        ),
        limit,
    ) + _count(
        inbound,
        sa.or_(
            sa.and_(inbound.c.claimed_at.is_(None), inbound.c.received_at < cutoff),
            inbound.c.claimed_at < cutoff,
        ),
        limit,
    )
    if stale:
        hand_off(force=True)
    return stale


def init_app(app) -> None:
    register_sweep_hook("ingest-outbox", requeue_stale_batches)
