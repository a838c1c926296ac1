"""Real-time membership: after each committed batch, re-check the affected segments only.

The ingest pipeline calls ``process_events(event_ids, profile_ids)`` once per outbox batch
(``cdp.ingest.tasks.register_event_processor``). It first writes the batch's purchase lines
(``cdp.models.purchases``), which purchase rules read. What the batch changed is summarised as
keys (``event:<name>`` per event name, ``profile`` when traits changed, ``identities``,
``consent``, ``new_profile``, ``merge``); only segments depending on one of them are
re-evaluated, in one UNION ALL query restricted to the batch's profiles, and only the
differences are written (with their ``segment_entered`` / ``segment_exited`` events).
Idempotent: a re-run finds nothing left to change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from cdp.db import UTCDateTime, db, transaction, utcnow
from cdp.models import ConsentRecord, Event, Identity, Merge, Profile
from cdp.models.purchases import PURCHASE_EVENTS, project_events
from segments.compiler import Analysis, analyze, compile_query
from segments.conditions.base import SCOPE, SCOPE_IDS, scope_params
from segments.internal_events import (
    INTERNAL_SOURCE_ID,
    ensure_internal_source,
    store_events,
    write_outbox,
)
from segments.membership import (
    ENTERED,
    EXITED,
    M,
    enqueue_outbox,
    load_definition,
    lock_segments,
    make_context,
)
from segments.models import Segment
from segments.sqljson import no_index

CHUNK = 500  # profiles per re-evaluation query


@dataclass(frozen=True)
class LiveSegment:
    id: int
    name: str
    version: int
    definition: dict
    analysis: Analysis


_plans: dict[str, tuple[tuple, list[LiveSegment]]] = {}
# (database, (segment id, version)..., minute) -> one UNION ALL of the segments' queries. One
# statement object per minute lets SQLAlchemy reuse the compiled SQL for every batch.
_statements: dict[tuple, sa.CompoundSelect] = {}
UNION = 100  # queries per UNION ALL (SQLite allows 500 compound terms)

# Built once: constructing statements costs more Python than running them on a few rows.
_IDS = sa.bindparam("ids", expanding=True)
_SINCE = sa.bindparam("since", type_=UTCDateTime())
_FIRST = sa.bindparam("first", type_=UTCDateTime())
_SEGMENTS = (
    sa.select(Segment.id, Segment.version, Segment.realtime, Segment.refreshed_at.is_(None))
    .where(Segment.status == "active")
    .order_by(Segment.id)
)
_BATCH = sa.select(Event.name, Event.received_at, Event.timestamp).where(
    Event.id.in_(sa.bindparam("events", expanding=True))
)
_FLAGS = {
    "new_profile": sa.exists().where(Profile.id.in_(_IDS), Profile.created_at >= _SINCE),
    "identities": sa.exists().where(Identity.profile_id.in_(_IDS), Identity.created_at >= _SINCE),
    "consent": sa.exists().where(
        ConsentRecord.profile_id.in_(_IDS), ConsentRecord.recorded_at >= _FIRST
    ),
    "merge": sa.exists().where(Merge.survivor_id.in_(_IDS), Merge.created_at >= _SINCE),
}
# One row per profile: its trait times, and the flags (the same on every row).
_KEYS = sa.select(Profile.trait_times, *(test.label(key) for key, test in _FLAGS.items())).where(
    Profile.id.in_(_IDS)
)
_MERGED = sa.select(Merge.merged_id).where(Merge.survivor_id.in_(_IDS), Merge.created_at >= _SINCE)
_CURRENT = {
    # By profile (few), not by segment (many members): SQLite must not use the segment indexes.
    name: sa.select(M.c.id, M.c.segment_id, M.c.profile_id).where(
        column.in_(sa.bindparam("segments", expanding=True)),
        M.c.profile_id.in_(_IDS),
        M.c.exited_at.is_(None),
    )
    for name, column in (("sqlite", no_index(M.c.segment_id)), ("postgresql", M.c.segment_id))
}


def live_segments() -> list[LiveSegment]:
    """Active, real-time, already computed segments, analysed once per change of any segment."""
    rows = db.session.execute(_SEGMENTS).all()
    key = tuple(tuple(row) for row in rows)
    url = str(db.session.get_bind().url)
    cached = _plans.get(url)
    if cached is not None and cached[0] == key:
        return cached[1]
    wanted = [row.id for row in rows if row.realtime and not row[3]]
    plan = []
    for segment in db.session.scalars(sa.select(Segment).where(Segment.id.in_(wanted))):
        try:
            analysis = analyze(segment.definition, load_definition, segment.id)
        except ValueError:  # a referenced segment went away; the scheduled refresh reports it
            continue
        plan.append(
            LiveSegment(segment.id, segment.name, segment.version, segment.definition, analysis)
        )
    _plans[url] = (key, plan)
    _statements.clear()  # a referenced definition may have changed
    return plan


def _statements_for(segments: list[LiveSegment], now: datetime, postgres: bool) -> list:
    """UNION ALLs of (profile id, segment id) over the scope: the temporary table on
    PostgreSQL (see ``_fill_scope``), else the ``SCOPE_IDS`` parameter."""
    url = str(db.session.get_bind().url)
    key = (url, tuple((s.id, s.version) for s in segments), now)
    found = _statements.get(key)
    if found is None:
        if len(_statements) > 1000:
            _statements.clear()
        ctx = make_context(now, scope_table=True) if postgres else make_context(now, SCOPE_IDS)
        queries = [
            compile_query(s.definition, ctx, s.analysis).add_columns(sa.literal(s.id))
            for s in segments
        ]
        found = _statements[key] = [
            sa.union_all(*queries[i : i + UNION]) for i in range(0, len(queries), UNION)
        ]
    return found


# PostgreSQL: the scope table, and the settings of a real-time check (one round trip). A few
# profiles: walk their rows through the indexes. Without this (and with no statistics on a
# temporary table) the planner hashes whole event index ranges.
_PG_SCOPE = (
    "CREATE TEMP TABLE IF NOT EXISTS segment_scope "
    "(profile_id BIGINT PRIMARY KEY) ON COMMIT DELETE ROWS; "
    "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; "
    "SET LOCAL enable_seqscan = off"
)
_SQLITE_SCOPE = "CREATE TEMP TABLE IF NOT EXISTS segment_scope (profile_id INTEGER PRIMARY KEY)"


def _fill_scope(profile_ids: list[int]) -> None:
    """The profile ids into the temporary table ``segment_scope`` (``scope_table`` queries)."""
    connection = db.session.connection()
    postgres = connection.dialect.name == "postgresql"
    connection.exec_driver_sql(_PG_SCOPE if postgres else _SQLITE_SCOPE)
    if not postgres:  # PostgreSQL empties it at each commit
        connection.execute(sa.delete(SCOPE))
    connection.execute(sa.insert(SCOPE), [{"profile_id": pid} for pid in profile_ids])
    if postgres:
        connection.exec_driver_sql("ANALYZE segment_scope")


def changed_keys(
    batch: list[tuple[str | None, datetime, datetime]], profile_ids: list[int]
) -> tuple[set[str], list[int]]:
    """What a batch of (name, received at, time) changed, and profiles merged away in it
    (they must leave their segments)."""
    if not batch:
        return set(), []
    since = min(received for _name, received, _ts in batch)
    times = {ts for _name, _received, ts in batch}
    connection = db.session.connection()
    params = {"ids": profile_ids, "since": since, "first": min(times)}
    rows = connection.execute(_KEYS, params).all()
    keys = {f"event:{name}" for name, _received, _ts in batch}
    keys |= {key for key in _FLAGS if rows and rows[0]._mapping[key]}
    if _traits_set([row.trait_times for row in rows], times):
        keys.add("profile")
    merged = list(connection.execute(_MERGED, params).scalars()) if "merge" in keys else []
    return keys, merged


def _traits_set(trait_times_of: list[dict | None], times: set[datetime]) -> bool:
    """Whether an event of the batch set a trait: each trait records the time of the event
    that last set it (``Profile.trait_times``)."""
    for trait_times in trait_times_of:
        for stamp in (trait_times or {}).values():
            try:
                if datetime.fromisoformat(stamp) in times:
                    return True
            except (TypeError, ValueError):
                continue
    return False


def process_events(event_ids: list[int], profile_ids: list[int]) -> dict:
    """The event processor: project the batch's purchase lines (purchase rules read them),
    then re-check affected segments for the batch's profiles."""
    if not event_ids:
        return {"segments": 0}
    batch = [tuple(row) for row in db.session.execute(_BATCH, {"events": event_ids})]
    if any(name in PURCHASE_EVENTS for name, _received, _ts in batch):
        with transaction() as session:
            project_events(session, Event.id.in_(event_ids))
    plan = live_segments() if profile_ids else []
    if not plan:
        db.session.commit()  # end the read transaction
        return {"segments": 0}
    keys, merged = changed_keys(batch, profile_ids)
    affected = [s for s in plan if s.analysis.depends_on & keys]
    if not affected:
        db.session.commit()
        return {"segments": 0}
    scope = sorted(set(profile_ids) | set(merged))
    outbox, entered, exited = [], 0, 0
    for start in range(0, len(scope), CHUNK):
        with transaction():
            ids, e, x = reevaluate(affected, scope[start : start + CHUNK])
        outbox += ids
        entered, exited = entered + e, exited + x
    enqueue_outbox(outbox)
    return {"segments": len(affected), "entered": entered, "exited": exited}


def _compare(segments, profile_ids, minute, postgres) -> tuple[set, dict]:
    """(segment id, profile id) pairs that should be members, and the open stints now."""
    connection = db.session.connection()  # Core: no ORM overhead on these small queries
    now_in = set()
    for statement in _statements_for(segments, minute, postgres):
        if postgres:
            now_in.update((sid, pid) for pid, sid in connection.execute(statement))
        else:
            params = scope_params(connection.dialect.name, profile_ids)
            rows = connection.execute(statement, params)
            now_in.update((sid, pid) for pid, sid in rows)
    params = {"segments": [s.id for s in segments], "ids": profile_ids}
    current = {
        (sid, pid): mid
        for mid, sid, pid in connection.execute(_CURRENT[connection.dialect.name], params)
    }
    return now_in, current


_OPEN = sa.insert(M).returning(M.c.id, M.c.segment_id, M.c.profile_id)
_CLOSE = (
    sa.update(M)
    .where(M.c.id.in_(sa.bindparam("stints", expanding=True)))
    .values(exited_at=sa.bindparam("at", type_=UTCDateTime()))
)
_SEGMENT = Segment.__table__
_RESIZE = (
    sa.update(_SEGMENT)
    .where(_SEGMENT.c.id == sa.bindparam("sid"))
    .values(size=_SEGMENT.c.size + sa.bindparam("delta"))
)


def reevaluate(segments: list[LiveSegment], profile_ids: list[int]) -> tuple[list[int], int, int]:
    """Recompute membership of ``profile_ids`` in ``segments``; write only the differences.

    Rules are evaluated as of the end of the current minute (so their compiled SQL is reused
    for every batch of that minute, and the events that triggered the check, timed up to now,
    count); the scheduled refresh keeps windows exact to the second.
    """
    connection = db.session.connection()  # Core, statements built once: no ORM overhead
    postgres = connection.dialect.name == "postgresql"
    now = utcnow().replace(microsecond=0)
    minute = now.replace(second=0) + timedelta(minutes=1)
    lock_segments([s.id for s in segments])
    if postgres:
        _fill_scope(profile_ids)
    now_in, current = _compare(segments, profile_ids, minute, postgres)
    entering = sorted(now_in - current.keys())
    leaving = sorted(current.keys() - now_in)
    if not entering and not leaving:
        return [], 0, 0
    opened = []
    if entering:
        rows = [{"segment_id": s, "profile_id": p, "entered_at": now} for s, p in entering]
        opened = connection.execute(_OPEN, rows).all()
    if leaving:
        connection.execute(_CLOSE, {"stints": [current[key] for key in leaving], "at": now})
    by_id = {s.id: s for s in segments}
    events = [_event(by_id[s], mid, p, ENTERED, now) for mid, s, p in opened]
    events += [_event(by_id[s], current[(s, p)], p, EXITED, now) for s, p in leaving]
    ensure_internal_source()
    stored = store_events(events)
    deltas: dict[int, int] = {}
    for sid, _ in entering:
        deltas[sid] = deltas.get(sid, 0) + 1
    for sid, _ in leaving:
        deltas[sid] = deltas.get(sid, 0) - 1
    resized = [{"sid": sid, "delta": delta} for sid, delta in deltas.items() if delta]
    if resized:
        connection.execute(_RESIZE, resized)
    return write_outbox(stored), len(entering), len(leaving)


def _event(segment: LiveSegment, membership_id: int, profile_id: int, name: str, now) -> dict:
    return {
        "source_id": INTERNAL_SOURCE_ID,
        "message_id": f"seg-{membership_id}-{'in' if name == ENTERED else 'out'}",
        "profile_id": profile_id,
        "type": "track",
        "name": name,
        "timestamp": now,
        "received_at": now,
        "properties": {
            "segment_id": segment.id,
            "segment_name": segment.name,
            "version": segment.version,
        },
        "context": {"channel": "internal", "reason": "realtime"},
    }
