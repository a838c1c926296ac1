"""Real-time membership: after each committed batch, re-check the affected segments only.

The ingest pipeline calls ``process_events(event_ids, profile_ids)`` once per outbox batch
(``cdp.ingest.tasks.register_event_processor``). What the batch changed is summarised as
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

from cdp.db import db, transaction, utcnow
from cdp.models import ConsentRecord, Event, Identity, Merge, Profile
from segments.compiler import Analysis, analyze, compile_query
from segments.conditions.base import SCOPE
from segments.membership import (
    ENTERED,
    EXITED,
    INTERNAL_SOURCE_ID,
    M,
    enqueue_outbox,
    ensure_internal_source,
    insert_events,
    load_definition,
    lock_segments,
    make_context,
    write_outbox,
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
# (database, segment id, version, minute) -> its compiled query over the scope table. One
# statement object per minute lets SQLAlchemy reuse the compiled SQL for every batch.
_statements: dict[tuple, sa.Select] = {}


def live_segments() -> list[LiveSegment]:
    """Active, real-time, already computed segments, analysed once per change of any segment."""
    rows = db.session.execute(
        sa.select(Segment.id, Segment.version, Segment.realtime, Segment.refreshed_at.is_(None))
        .where(Segment.status == "active")
        .order_by(Segment.id)
    ).all()
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


def _statement(segment: LiveSegment, now: datetime) -> sa.Select:
    key = (str(db.session.get_bind().url), segment.id, segment.version, now)
    found = _statements.get(key)
    if found is None:
        if len(_statements) > 1000:
            _statements.clear()
        ctx = make_context(now, scope_table=True)
        found = _statements[key] = compile_query(segment.definition, ctx, segment.analysis)
    return found


def _fill_scope(profile_ids: list[int]) -> None:
    postgres = db.session.get_bind().dialect.name == "postgresql"
    if postgres:
        ddl = (
            "CREATE TEMP TABLE IF NOT EXISTS segment_scope "
            "(profile_id BIGINT PRIMARY KEY) ON COMMIT DELETE ROWS"
        )
    else:
        ddl = "CREATE TEMP TABLE IF NOT EXISTS segment_scope (profile_id INTEGER PRIMARY KEY)"
    db.session.execute(sa.text(ddl))
    if not postgres:  # PostgreSQL empties it at each commit
        db.session.execute(sa.delete(SCOPE))
    db.session.execute(sa.insert(SCOPE), [{"profile_id": pid} for pid in profile_ids])
    if postgres:
        # A few profiles: walk their rows through the indexes. Without this (and with no
        # statistics on a temporary table) the planner hashes whole event index ranges.
        db.session.execute(sa.text("ANALYZE segment_scope"))
        for setting in ("enable_hashjoin", "enable_mergejoin", "enable_seqscan"):
            db.session.execute(sa.text(f"SET LOCAL {setting} = off"))


def changed_keys(event_ids: list[int], profile_ids: list[int]) -> tuple[set[str], list[int]]:
    """What a batch changed, and profiles merged away in it (they must leave their segments)."""
    connection = db.session.connection()
    names, times = set(), set()
    since = None
    for name, received, ts in connection.execute(
        sa.select(Event.name, Event.received_at, Event.timestamp).where(Event.id.in_(event_ids))
    ):
        names.add(f"event:{name}")
        times.add(ts)
        since = received if since is None else min(since, received)
    if since is None:
        return set(), []
    first_event = min(times)
    mine = Profile.id.in_(profile_ids)
    flags = {
        "new_profile": sa.exists().where(mine, Profile.created_at >= since),
        "identities": sa.exists().where(
            Identity.profile_id.in_(profile_ids), Identity.created_at >= since
        ),
        "consent": sa.exists().where(
            ConsentRecord.profile_id.in_(profile_ids), ConsentRecord.recorded_at >= first_event
        ),
    }
    row = connection.execute(sa.select(*(test.label(key) for key, test in flags.items()))).one()
    keys = names | {key for key, value in row._mapping.items() if value}
    if _traits_set(profile_ids, times):
        keys.add("profile")
    merged = list(
        db.session.scalars(
            sa.select(Merge.merged_id).where(
                Merge.survivor_id.in_(profile_ids), Merge.created_at >= since
            )
        )
    )
    if merged:
        keys.add("merge")
    return keys, merged


def _traits_set(profile_ids: list[int], times: set[datetime]) -> bool:
    """Whether an event of the batch set a trait: each trait records the time of the event
    that last set it (``Profile.trait_times``)."""
    for (trait_times,) in db.session.execute(
        sa.select(Profile.trait_times).where(Profile.id.in_(profile_ids))
    ):
        for stamp in (trait_times or {}).values():
            try:
                if datetime.fromisoformat(stamp) in times:
                    return True
            except (TypeError, ValueError):
                continue
    return False


def process_events(event_ids: list[int], profile_ids: list[int]) -> dict:
    """The event processor: re-check affected segments for the batch's profiles."""
    if not event_ids or not profile_ids:
        return {"segments": 0}
    plan = live_segments()
    if not plan:
        return {"segments": 0}
    keys, merged = changed_keys(event_ids, profile_ids)
    affected = [s for s in plan if s.analysis.depends_on & keys]
    if not affected:
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


def reevaluate(segments: list[LiveSegment], profile_ids: list[int]) -> tuple[list[int], int, int]:
    """Recompute membership of ``profile_ids`` in ``segments``; write only the differences.

    Rules are evaluated as of the end of the current minute (so their compiled SQL is reused
    for every batch of that minute, and the events that triggered the check, timed up to now,
    count); the scheduled refresh keeps windows exact to the second.
    """
    session = db.session
    lock_segments([s.id for s in segments])
    _fill_scope(profile_ids)
    now = utcnow().replace(microsecond=0)
    minute = now.replace(second=0) + timedelta(minutes=1)
    now_in = set()
    connection = session.connection()  # Core: no ORM overhead on these many small queries
    for segment in segments:
        rows = connection.execute(_statement(segment, minute))
        now_in.update((segment.id, pid) for (pid,) in rows)
    # By profile (few), not by segment (many members): SQLite must not use the segment indexes.
    segment_id = no_index(M.c.segment_id) if connection.dialect.name == "sqlite" else M.c.segment_id
    current = {
        (sid, pid): mid
        for mid, sid, pid in connection.execute(
            sa.select(M.c.id, M.c.segment_id, M.c.profile_id).where(
                segment_id.in_([s.id for s in segments]),
                M.c.profile_id.in_(sa.select(SCOPE.c.profile_id)),
                M.c.exited_at.is_(None),
            )
        )
    }
    if connection.dialect.name != "postgresql":
        connection.execute(sa.delete(SCOPE))
    entering = sorted(now_in - current.keys())
    leaving = sorted(current.keys() - now_in)
    if not entering and not leaving:
        return [], 0, 0
    opened = []
    if entering:
        rows = [{"segment_id": s, "profile_id": p, "entered_at": now} for s, p in entering]
        opened = session.execute(
            sa.insert(M).returning(M.c.id, M.c.segment_id, M.c.profile_id), rows
        ).all()
    if leaving:
        session.execute(
            sa.update(M).where(M.c.id.in_([current[key] for key in leaving])).values(exited_at=now)
        )
    by_id = {s.id: s for s in segments}
    events = [_event(by_id[s], mid, p, ENTERED, now) for mid, s, p in opened]
    events += [_event(by_id[s], current[(s, p)], p, EXITED, now) for s, p in leaving]
    ensure_internal_source()
    stored = session.execute(insert_events().returning(Event.id, Event.profile_id), events).all()
    deltas: dict[int, int] = {}
    for sid, _ in entering:
        deltas[sid] = deltas.get(sid, 0) + 1
    for sid, _ in leaving:
        deltas[sid] = deltas.get(sid, 0) - 1
    for sid, delta in deltas.items():
        if delta:
            session.execute(
                sa.update(Segment).where(Segment.id == sid).values(size=Segment.size + delta)
            )
    return write_outbox([tuple(row) for row in stored]), len(entering), len(leaving)


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
