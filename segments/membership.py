"""Membership: set-based refresh (delta only), segment events, size history, overlap, members.

A refresh computes the members once into a temporary table, then closes the stints of
profiles no longer in it (one UPDATE) and opens stints for new ones (one INSERT…SELECT).
Each change is also an event (``segment_entered`` / ``segment_exited``) from the internal
source, handed to downstream processors (journeys) through an outbox batch like any
ingested event. The first computation of a segment records members without events.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import current_app

from cdp.db import JSONType, UTCDateTime, db, utcnow
from cdp.ingest import tasks as ingest_tasks
from cdp.models import Event, Profile
from cdp.queue import enqueue
from segments.compiler import analyze, compile_query
from segments.conditions import Context
from segments.internal_events import (
    EVENT_COLUMNS,
    INTERNAL_SOURCE_ID,
    ensure_internal_source,
    insert_events,
    write_outbox,
)
from segments.models import Segment, SegmentMembership

log = logging.getLogger(__name__)
ENTERED, EXITED = "segment_entered", "segment_exited"
# Shown in member lists, previews and exports: no names, phones, identifiers or birth dates.
PUBLIC_TRAITS = ("city", "city_tier", "preferred_channel")
M = SegmentMembership.__table__
CANDIDATES = sa.table("segment_candidates", sa.column("profile_id", sa.BigInteger))


def dialect() -> str:
    return db.session.get_bind().dialect.name


def load_definition(segment_id: int) -> dict | None:
    """The definition of an active segment (for references from other segments)."""
    segment = db.session.get(Segment, segment_id)
    return segment.definition if segment is not None and segment.status == "active" else None


def make_context(
    now: datetime | None = None, scope: list[int] | None = None, scope_table: bool = False
) -> Context:
    name = dialect()
    full = scope is None and not scope_table
    return Context(
        now=now or utcnow(),
        dialect=name,
        timezone=current_app.config.get("TIMEZONE", "Asia/Shanghai"),
        load_segment=load_definition,
        scope=scope,
        scope_table=scope_table,
        estimate=event_share if name == "sqlite" and full else None,
    )


def event_share(names: tuple[str, ...], start: datetime | None) -> float:
    """The share of all events with these names since ``start`` (index-only counts)."""
    e = Event.__table__
    query = sa.select(sa.func.count()).where(e.c.name.in_(names))
    if start is not None:
        query = query.where(e.c.timestamp >= start)
    total = db.session.scalar(sa.select(sa.func.max(e.c.id))) or 0
    return db.session.scalar(query) / total if total else 0.0


@contextmanager
def whole_population():
    """For queries over every profile (refresh, preview): on PostgreSQL, no nested loops.

    The planner estimates JSON predicates very selective (often one row), then loops over
    profiles re-running an events aggregate for each: minutes instead of a second. Hash
    joins are always right for these queries; real-time checks of a few profiles keep
    nested loops over the indexes.
    """
    postgres = dialect() == "postgresql"
    if postgres:
        db.session.execute(sa.text("SET LOCAL enable_nestloop = off"))
    try:
        yield
    finally:
        if postgres and db.session.is_active:
            db.session.execute(sa.text("SET LOCAL enable_nestloop = on"))


def lock_segments(ids: list[int]) -> None:
    """Serialise membership writers per segment: a write first (row locks on PostgreSQL,
    the database write lock on SQLite) so two refreshes never interleave their deltas."""
    if ids:
        db.session.connection().execute(_LOCK, {"ids": sorted(ids)})


_LOCK = (
    sa.update(Segment.__table__)
    .where(Segment.__table__.c.id.in_(sa.bindparam("ids", expanding=True)))
    .values(size=Segment.__table__.c.size)
)


def _prepare_candidates() -> None:
    if dialect() == "postgresql":
        ddl = (
            "CREATE TEMP TABLE IF NOT EXISTS segment_candidates "
            "(profile_id BIGINT PRIMARY KEY) ON COMMIT DELETE ROWS"
        )
    else:
        ddl = "CREATE TEMP TABLE IF NOT EXISTS segment_candidates (profile_id INTEGER PRIMARY KEY)"
    db.session.execute(sa.text(ddl))
    db.session.execute(sa.delete(CANDIDATES))


@dataclass
class RefreshResult:
    segment_id: int
    size: int = 0
    entered: int = 0
    exited: int = 0
    ms: float = 0.0
    outbox_ids: list[int] = field(default_factory=list)


def refresh(
    segment: Segment, now: datetime | None = None, reason: str = "refresh"
) -> RefreshResult:
    """Bring one segment's membership up to date; runs in the caller's transaction."""
    started = time.perf_counter()
    lock_segments([segment.id])
    ctx = make_context(now)
    result = RefreshResult(segment.id)
    if segment.status != "active":
        return result
    query = compile_query(segment.definition, ctx, analyze(segment.definition, load_definition))
    session = db.session
    _prepare_candidates()
    with whole_population():
        session.execute(sa.insert(CANDIDATES).from_select(["profile_id"], query))
    open_ = sa.and_(M.c.segment_id == segment.id, M.c.exited_at.is_(None))
    gone = ~sa.exists().where(CANDIDATES.c.profile_id == M.c.profile_id)
    exited = session.execute(sa.update(M).where(open_, gone).values(exited_at=ctx.now))
    new = sa.select(
        sa.literal(segment.id), CANDIDATES.c.profile_id, sa.literal(ctx.now, UTCDateTime)
    )
    new = new.where(~sa.exists().where(open_, M.c.profile_id == CANDIDATES.c.profile_id))
    entered = session.execute(
        sa.insert(M).from_select(["segment_id", "profile_id", "entered_at"], new)
    )
    result.entered, result.exited = entered.rowcount, exited.rowcount
    result.size = session.scalar(sa.select(sa.func.count()).select_from(CANDIDATES))
    session.execute(sa.delete(CANDIDATES))
    if segment.refreshed_at is not None:
        result.outbox_ids = emit_changes(segment, ctx.now, reason)
    result.ms = round((time.perf_counter() - started) * 1000, 1)
    segment.size, segment.refreshed_at = result.size, ctx.now
    segment.last_refresh = {
        "at": ctx.now.isoformat(),
        "entered": result.entered,
        "exited": result.exited,
        "ms": result.ms,
        "reason": reason,
    }
    return result


def _event_columns(segment: Segment, name: str, suffix: str, reason: str, now: datetime):
    props = {"segment_id": segment.id, "segment_name": segment.name, "version": segment.version}
    message_id = sa.literal("seg-") + sa.cast(M.c.id, sa.String) + sa.literal(suffix)
    return [
        sa.literal(INTERNAL_SOURCE_ID),
        message_id,
        M.c.profile_id,
        sa.literal("track"),
        sa.literal(name),
        sa.literal(now, UTCDateTime),
        sa.literal(now, UTCDateTime),
        sa.literal(props, JSONType),
        sa.literal({"channel": "internal", "reason": reason}, JSONType),
    ]


def emit_changes(segment: Segment, now: datetime, reason: str) -> list[int]:
    """Insert the events of the stints opened and closed at ``now``; return outbox batch ids."""
    ensure_internal_source()
    rows: list[tuple[int, int]] = []
    for name, suffix, where in (
        (ENTERED, "-in", sa.and_(M.c.entered_at == now, M.c.exited_at.is_(None))),
        (EXITED, "-out", M.c.exited_at == now),
    ):
        select = sa.select(*_event_columns(segment, name, suffix, reason, now)).where(
            M.c.segment_id == segment.id, where
        )
        statement = insert_events().from_select(EVENT_COLUMNS, select)
        rows += db.session.execute(statement.returning(Event.id, Event.profile_id)).all()
    return write_outbox(rows)


def emit_internal_event(
    profile_id: int, message_id: str, name: str, properties: dict, now: datetime
) -> Callable[[], None]:
    """Insert one internal event in the caller's transaction (journeys: a trait they set).

    Returns the hand-off to call after commit, so downstream processors see the event.
    """
    ensure_internal_source()
    values = dict(zip(EVENT_COLUMNS, (INTERNAL_SOURCE_ID, message_id[:100], profile_id, "track",
                                      name, now, now, properties, {"channel": "internal"}), strict=True))  # fmt: skip
    rows = db.session.execute(
        insert_events().values(**values).returning(Event.id, Event.profile_id)
    ).all()
    outbox_ids = write_outbox([tuple(row) for row in rows])
    return lambda: enqueue_outbox(outbox_ids)


def enqueue_outbox(outbox_ids: list[int]) -> None:
    """After commit: hand the segment events to the downstream processors (journeys)."""
    if not outbox_ids:
        return

    try:
        hand_off = getattr(ingest_tasks, "hand_off", None)
        if hand_off is not None:
            hand_off()  # one drain job processes every pending batch
        else:
            for outbox_id in outbox_ids:
                enqueue(ingest_tasks.process_batch, outbox_id, queue="ingest")
    except Exception:  # the sweeper queues stale batches again
        log.warning("segments: could not queue outbox batches %s", outbox_ids)


# -- reading ----------------------------------------------------------------------------------


def size_at(segment_id: int, at: datetime) -> int:
    """How many profiles were members at instant ``at``."""
    return db.session.scalar(
        sa.select(sa.func.count())
        .select_from(M)
        .where(
            M.c.segment_id == segment_id,
            M.c.entered_at <= at,
            sa.or_(M.c.exited_at.is_(None), M.c.exited_at > at),
        )
    )


def size_history(segment_id: int, days: int = 30, now: datetime | None = None) -> list[dict]:
    """Size at the end of each of the last ``days`` local days, with entries and exits."""
    ctx = make_context(now)
    first_day = ctx.today - timedelta(days=days - 1)
    start = datetime.combine(first_day, datetime.min.time(), tzinfo=ctx.now.tzinfo) - timedelta(
        minutes=ctx.offset_minutes
    )
    base = size_at(segment_id, start - timedelta(microseconds=1))
    changes: dict[str, list[int]] = {}
    for column, index in ((M.c.entered_at, 0), (M.c.exited_at, 1)):
        day = ctx.sql.local_day(column, ctx.offset_minutes).label("day")
        query = (
            sa.select(day, sa.func.count())
            .where(M.c.segment_id == segment_id, column >= start, column <= ctx.now)
            .group_by(day)
        )
        for value, count in db.session.execute(query):
            changes.setdefault(str(value), [0, 0])[index] = count
    history, size = [], base
    for offset in range(days):
        day = (first_day + timedelta(days=offset)).isoformat()
        entered, exited = changes.get(day, (0, 0))
        size += entered - exited
        history.append({"day": day, "size": size, "entered": entered, "exited": exited})
    return history


def overlap(a: int, b: int) -> dict:
    """Current members of a, of b, and of both."""
    m1, m2 = M.alias("a"), M.alias("b")
    both = db.session.scalar(
        sa.select(sa.func.count())
        .select_from(m1.join(m2, m1.c.profile_id == m2.c.profile_id))
        .where(
            m1.c.segment_id == a,
            m1.c.exited_at.is_(None),
            m2.c.segment_id == b,
            m2.c.exited_at.is_(None),
        )
    )
    sizes = dict(
        db.session.execute(
            sa.select(M.c.segment_id, sa.func.count())
            .where(M.c.segment_id.in_((a, b)), M.c.exited_at.is_(None))
            .group_by(M.c.segment_id)
        ).all()
    )
    size_a, size_b = sizes.get(a, 0), sizes.get(b, 0)
    return {
        "a": size_a,
        "b": size_b,
        "both": both,
        "only_a": size_a - both,
        "only_b": size_b - both,
    }


def public_row(profile_id, kind, traits, first_seen_at, last_seen_at, **extra) -> dict:
    traits = traits or {}
    row = {"profile_id": profile_id, "kind": kind}
    row.update({key: traits.get(key) for key in PUBLIC_TRAITS})
    row.update(first_seen_at=first_seen_at, last_seen_at=last_seen_at, **extra)
    return row


def members(segment_id: int, after: int = 0, limit: int = 50) -> list[dict]:
    """Current members ordered by profile id (keyset paging), without personal data."""
    p = Profile.__table__
    query = (
        sa.select(
            M.c.profile_id,
            M.c.entered_at,
            p.c.kind,
            p.c.traits,
            p.c.first_seen_at,
            p.c.last_seen_at,
        )
        .join(p, p.c.id == M.c.profile_id)
        .where(M.c.segment_id == segment_id, M.c.exited_at.is_(None), M.c.profile_id > after)
        .order_by(M.c.profile_id)
        .limit(limit)
    )
    return [
        public_row(pid, kind, traits, first, last, entered_at=entered)
        for pid, entered, kind, traits, first, last in db.session.execute(query)
    ]


def profile_rows(profile_ids: list[int]) -> list[dict]:
    p = Profile.__table__
    query = sa.select(p.c.id, p.c.kind, p.c.traits, p.c.first_seen_at, p.c.last_seen_at).where(
        p.c.id.in_(profile_ids)
    )
    return [public_row(*row) for row in db.session.execute(query.order_by(p.c.id))]
