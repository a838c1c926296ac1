"""Entering a journey: audience, test mode, global control, re-entry rules, entry keys.

Instances are unique on (journey, profile, entry key, rotation), so entering twice for the
same reason (an event processed again, a schedule slot fired twice) inserts nothing.
Event triggers enter a batch's candidates (bounded by the batch); schedules and date traits
enter whole populations with one INSERT … SELECT, never a Python loop over profiles.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from cdp.consent import refused_profiles
from cdp.db import JSONType, UTCDateTime, db
from cdp.models import Profile
from journeys.control import control_clause, in_global_control
from journeys.engine.plans import Plan
from journeys.models import LIVE_STATES, JourneyInstance, JourneyStepLog
from segments.models import SegmentMembership

I = JourneyInstance.__table__  # noqa: E741  (the table, in Core statements)
UNIQUE = ["journey_id", "profile_id", "entry_key", "rotation"]


@dataclass(frozen=True)
class Candidate:
    profile_id: int
    entry_key: str
    context: dict


def _insert():
    dialect = db.session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(JourneyInstance)


def _eligible(plan: Plan, profile_ids: set[int]) -> set[int]:
    """Live profiles of the audience kind, in the audience segment, not refusing automation."""
    query = sa.select(Profile.id).where(
        Profile.id.in_(profile_ids), Profile.merged_into_id.is_(None), Profile.kind == plan.kind
    )
    segment_id = plan.definition["audience"].get("segment_id")
    if segment_id:
        query = query.where(Profile.id.in_(_members(segment_id)))
    if plan.marketing:
        query = query.where(Profile.id.not_in(refused_profiles("automated_marketing")))
    return set(db.session.scalars(query))


def _members(segment_id: int) -> sa.Select:
    return sa.select(SegmentMembership.profile_id).where(
        SegmentMembership.segment_id == segment_id, SegmentMembership.exited_at.is_(None)
    )


def _rotation(plan: Plan, history: list[tuple], now: datetime) -> int | None:
    """The rotation a new entry gets given this key's earlier instances, or None: refused."""
    if not history:
        return 0
    rule = plan.entry.get("reentry", "after_exit")
    if rule == "once" or any(state in LIVE_STATES for _, state, _ in history):
        return None
    if rule == "cooldown":
        last_end = max((ended for _, _, ended in history if ended is not None), default=None)
        if last_end is not None and last_end + timedelta(days=plan.entry["cooldown_days"]) > now:
            return None
    return max(rotation for rotation, _, _ in history) + 1


def enter_candidates(plan: Plan, candidates: list[Candidate], now: datetime) -> list[int]:
    """Start instances for event-triggered candidates; returns ids of those that will run."""
    wanted = {c.profile_id for c in candidates}
    if plan.test_mode:
        wanted &= plan.test_profile_ids
    eligible = _eligible(plan, wanted) if wanted else set()
    if not eligible:
        return []
    history: dict[tuple[int, str], list[tuple]] = defaultdict(list)
    live_count: dict[int, int] = defaultdict(int)
    for profile_id, key, rotation, state, ended in db.session.execute(
        sa.select(I.c.profile_id, I.c.entry_key, I.c.rotation, I.c.state, I.c.ended_at).where(
            I.c.journey_id == plan.journey_id, I.c.profile_id.in_(eligible)
        )
    ):
        history[(profile_id, key)].append((rotation, state, ended))
        live_count[profile_id] += state in LIVE_STATES
    limit = plan.entry.get("max_concurrent", 1)
    rows, seen = [], set()
    for c in candidates:
        if c.profile_id not in eligible or (c.profile_id, c.entry_key) in seen:
            continue
        rotation = _rotation(plan, history[(c.profile_id, c.entry_key)], now)
        if rotation is None or live_count[c.profile_id] >= limit:
            continue
        seen.add((c.profile_id, c.entry_key))
        control = plan.marketing and not plan.test_mode and in_global_control(c.profile_id)
        live_count[c.profile_id] += not control
        rows.append(_row(plan, c, rotation, now, control))
    return _insert_rows(plan, rows, now)


def _row(plan: Plan, c: Candidate, rotation: int, now: datetime, control: bool) -> dict:
    row = {
        "journey_id": plan.journey_id,
        "version_id": plan.version_id,
        "profile_id": c.profile_id,
        "entry_key": c.entry_key,
        "rotation": rotation,
        "step_id": plan.definition["start"],
        "state": "active",
        "next_run_at": now,
        "step_entered_at": now,
        "entered_at": now,
        "holdout": False,
        "test": plan.test_mode,
        "context": c.context,
        "visits": {},
    }
    if control:  # measured against, never touched: ended at once, kept for goal tracking
        row.update(state="exited", exit_reason="global_control", holdout=True, next_run_at=None)
        row.update(ended_at=now, step_id=None)
    return row


def _insert_rows(plan: Plan, rows: list[dict], now: datetime) -> list[int]:
    if not rows:
        return []
    statement = _insert().on_conflict_do_nothing(index_elements=UNIQUE)
    inserted = db.session.execute(statement.returning(I.c.id, I.c.state, I.c.step_id), rows).all()
    started = [(row_id, step) for row_id, state, step in inserted if state == "active"]
    log_entries(plan, started, now)
    return [row_id for row_id, _ in started]


def log_entries(plan: Plan, started: list[tuple[int, str]], now: datetime) -> None:
    if started:
        db.session.execute(
            sa.insert(JourneyStepLog),
            [
                {
                    "instance_id": row_id,
                    "journey_id": plan.journey_id,
                    "version_id": plan.version_id,
                    "step_id": step,
                    "outcome": "entered",
                    "at": now,
                }
                for row_id, step in started
            ],
        )


def enter_population(
    plan: Plan, population: sa.Select, entry_key: str, now: datetime, context: dict
) -> int:
    """Enter every profile id ``population`` selects, in SQL; returns how many started.

    New instances are due now: the sweeper advances them in batches.
    """
    pop = population.subquery("population")
    key = sa.literal(entry_key, sa.String)
    earlier = I.alias("earlier")
    same = sa.and_(earlier.c.journey_id == plan.journey_id, earlier.c.profile_id == pop.c.id)
    blocked = [sa.exists().where(same, earlier.c.state.in_(LIVE_STATES))]
    rule = plan.entry.get("reentry", "after_exit")
    if rule == "once":
        blocked.append(sa.exists().where(same, earlier.c.entry_key == key))
    elif rule == "cooldown":
        since = now - timedelta(days=plan.entry["cooldown_days"])
        blocked.append(sa.exists().where(same, earlier.c.ended_at > since))
    rotation = (
        sa.select(sa.func.coalesce(sa.func.max(earlier.c.rotation) + 1, 0))
        .where(same, earlier.c.entry_key == key)
        .scalar_subquery()
    )
    filters = [Profile.kind == plan.kind, Profile.merged_into_id.is_(None), ~sa.or_(*blocked)]
    segment_id = plan.definition["audience"].get("segment_id")
    if segment_id:
        filters.append(pop.c.id.in_(_members(segment_id)))
    if plan.marketing:
        filters.append(pop.c.id.not_in(refused_profiles("automated_marketing")))
    if plan.test_mode:
        filters.append(pop.c.id.in_(sorted(plan.test_profile_ids) or [-1]))
    base = sa.select(pop.c.id).join(Profile, Profile.id == pop.c.id).where(*filters)
    control = control_clause(pop.c.id) if plan.marketing and not plan.test_mode else sa.false()
    started = 0
    for is_control in (True, False):
        state = "exited" if is_control else "active"
        select = base.where(control if is_control else sa.not_(control)).add_columns(
            sa.literal(plan.journey_id),
            sa.literal(plan.version_id),
            key,
            rotation,
            sa.literal(None if is_control else plan.definition["start"], sa.String),
            sa.literal(state),
            sa.literal(None if is_control else now, UTCDateTime),
            sa.literal(now, UTCDateTime),
            sa.literal(now, UTCDateTime),
            sa.literal(now if is_control else None, UTCDateTime),
            sa.literal("global_control" if is_control else None, sa.String),
            sa.literal(is_control),
            sa.literal(plan.test_mode),
            sa.literal(context, JSONType),
            sa.literal({}, JSONType),
        )
        columns = ["profile_id", "journey_id", "version_id", "entry_key", "rotation", "step_id"]
        columns += ["state", "next_run_at", "step_entered_at", "entered_at", "ended_at"]
        columns += ["exit_reason", "holdout", "test", "context", "visits"]
        statement = (
            _insert().from_select(columns, select).on_conflict_do_nothing(index_elements=UNIQUE)
        )
        result = db.session.execute(statement.returning(I.c.id, I.c.step_id))
        if not is_control:
            rows = result.all()
            log_entries(plan, rows, now)
            started += len(rows)
    return started
