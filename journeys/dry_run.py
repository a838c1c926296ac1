"""Dry run: who would enter a journey now (count, sample, those the control group keeps out)."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa

from cdp.consent import refused_profiles
from cdp.db import db, utcnow
from cdp.models import Profile
from journeys.control import control_clause
from journeys.models import LIVE_STATES, Journey, JourneyInstance
from journeys.service import MAX_ID, get_journey
from journeys.validation import InvalidDefinition, schema_problems
from segments.models import SegmentMembership

INST = JourneyInstance.__table__


def _reentry_blocked(journey: Journey, entry: dict, now: datetime):
    """SQL: an earlier instance keeps the profile out (the engine's rule, journeys.engine.entry).

    ``once``: any instance; ``after_exit``: a live one; ``cooldown``: a live one, or one that
    ended less than ``cooldown_days`` ago.
    """
    mine = sa.and_(
        INST.c.journey_id == journey.id,
        INST.c.profile_id == Profile.id,
        INST.c.test == bool(journey.test_mode),
    )
    rule = entry.get("reentry", "after_exit")
    blocking = INST.c.state.in_(LIVE_STATES)
    if rule == "once":
        blocking = sa.true()
    elif rule == "cooldown":
        since = now - timedelta(days=int(entry.get("cooldown_days") or 1))
        blocking = sa.or_(blocking, INST.c.ended_at > since)
    return sa.exists(sa.select(INST.c.id).where(mine, blocking))


def _member_of(segment_id: int):
    if segment_id > MAX_ID:
        return sa.false()
    m = SegmentMembership
    return Profile.id.in_(
        sa.select(m.profile_id).where(m.segment_id == segment_id, m.exited_at.is_(None))
    )


def dry_run(journey_id: int, limit: int = 20, *, definition: dict | None = None) -> dict:
    """Who would enter the journey now (its draft, or ``definition``): count and sample ids.

    Segment-entry and schedule triggers: live profiles of the audience kind in the audience
    and trigger segments, less those the re-entry rule keeps out. Event and date-trait
    triggers: the audience (kind and segment); who enters then depends on events and dates.
    Marketing journeys leave out the global control group and anyone who refused automated
    marketing. In test mode, only the test profiles count.
    """
    journey = get_journey(journey_id)
    definition = journey.draft if definition is None else definition
    problems = schema_problems(definition)
    if problems:
        raise InvalidDefinition(problems)
    now = utcnow()
    audience, trigger = definition["audience"], definition["trigger"]
    where = [Profile.kind == audience["kind"], Profile.merged_into_id.is_(None)]
    if audience.get("segment_id"):
        where.append(_member_of(audience["segment_id"]))
    by_segment = trigger["type"] in ("segment_entry", "schedule")
    if by_segment and trigger.get("segment_id"):
        where.append(_member_of(trigger["segment_id"]))
    if by_segment:
        where.append(~_reentry_blocked(journey, definition.get("entry") or {}, now))
    if journey.test_mode:
        where.append(Profile.id.in_(journey.test_profile_ids or []))
    marketing = definition.get("category", "marketing") == "marketing"
    if marketing:  # PIPL Art. 24: refusing automated marketing keeps a person out
        where.append(Profile.id.not_in(refused_profiles("automated_marketing")))
    # Test profiles are chosen by hand: the control group does not hide them.
    control = control_clause(Profile.id) if marketing and not journey.test_mode else sa.false()
    count, excluded = db.session.execute(
        sa.select(
            sa.func.coalesce(sa.func.sum(sa.case((control, 0), else_=1)), 0),
            sa.func.coalesce(sa.func.sum(sa.case((control, 1), else_=0)), 0),
        ).where(*where)
    ).one()
    sample = db.session.scalars(
        sa.select(Profile.id).where(*where, sa.not_(control)).order_by(Profile.id).limit(limit)
    ).all()
    return {
        "count": int(count),
        "sample": list(sample),
        "excluded_control": int(excluded),
        "basis": "trigger" if by_segment else "audience",
        "test_mode": bool(journey.test_mode),
    }
