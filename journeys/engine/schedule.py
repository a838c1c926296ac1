"""Schedule and date-trait triggers: whole populations enter, once per slot, in SQL.

A slot (``once``, ``day:2026-11-23`` …) is recorded in ``journey_schedule_runs`` when it
fires, in the same transaction as the entries, so a slot fires at most once whatever the
number of workers or retries. Missed slots are not back-filled beyond the current one.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from cdp.db import db, lock_for_writing, utcnow
from cdp.models import Profile
from journeys.engine.entry import enter_population
from journeys.engine.plans import Plan, live_plans
from journeys.engine.timing import DEFAULT_AT, zone_of
from journeys.models import JourneyScheduleRun
from segments.models import SegmentMembership
from segments.sqljson import SqlJson, check_path


def _local_due(now: datetime, at: str) -> bool:
    """Has local ``HH:MM`` of today passed?"""
    hours, minutes = (int(part) for part in at.split(":"))
    return now.astimezone(zone_of(None)).time() >= time(hours, minutes)


def schedule_slot(trigger: dict, now: datetime) -> str | None:
    """The slot of a schedule trigger due at ``now`` (None: nothing due)."""
    if "at" in trigger:
        at = datetime.fromisoformat(trigger["at"])
        if at.tzinfo is None:
            at = at.replace(tzinfo=zone_of(None))
        return f"once:{trigger['at']}" if at <= now else None
    if not _local_due(now, trigger["time"]):
        return None
    local = now.astimezone(zone_of(None)).date()
    every = trigger["every"]
    if every == "week" and local.isoweekday() != trigger.get("weekday", 1):
        return None
    if every == "month" and local.day != trigger.get("day", 1):
        return None
    return f"{every}:{local.isoformat()}"


def _claim_slot(plan: Plan, slot: str, now: datetime) -> bool:
    dialect = db.session.get_bind().dialect.name
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(JourneyScheduleRun)
    done = db.session.execute(
        insert.values(journey_id=plan.journey_id, slot=slot, at=now)
        .on_conflict_do_nothing()
        .returning(JourneyScheduleRun.slot)
    ).first()
    return done is not None


def _population(trigger: dict) -> sa.Select:
    if trigger.get("segment_id"):
        return sa.select(SegmentMembership.profile_id.label("id")).where(
            SegmentMembership.segment_id == trigger["segment_id"],
            SegmentMembership.exited_at.is_(None),
        )
    return sa.select(Profile.id.label("id"))


def _trait_population(trigger: dict, now: datetime) -> tuple[sa.Select, str]:
    """Profiles whose date trait + offset_days is today (annual: same month and day)."""
    target = now.astimezone(zone_of(None)).date() - timedelta(days=trigger.get("offset_days", 0))
    sj = SqlJson(db.session.get_bind().dialect.name)
    text = sj.json_text(Profile.traits, check_path((trigger["trait"],)))
    if trigger.get("annual"):
        match = sa.func.substr(text, 6, 5) == target.strftime("%m-%d")
    else:
        match = sa.func.substr(text, 1, 10) == target.isoformat()
    population = sa.select(Profile.id.label("id")).where(match)
    return population, target.isoformat()


def fire_due(now: datetime | None = None) -> dict:
    """Fire every schedule / date-trait slot that is due and has not fired yet."""
    now = now or utcnow()
    fired = {}
    for plan in live_plans():
        trigger = plan.trigger
        if trigger["type"] == "schedule":
            slot = schedule_slot(trigger, now)
            key = "" if slot and slot.startswith("once:") else slot
            population = _population(trigger) if slot else None
        elif trigger["type"] == "date_trait":
            due = _local_due(now, trigger.get("at", DEFAULT_AT))
            slot = f"date:{now.astimezone(zone_of(None)).date().isoformat()}" if due else None
            population, key = _trait_population(trigger, now) if slot else (None, None)
        else:
            continue
        if slot is None:
            continue
        lock_for_writing(db.session, wait_ms=30_000)
        if not _claim_slot(plan, slot, now):
            db.session.rollback()
            continue
        entered = enter_population(plan, population, key, now, {"slot": slot})
        db.session.execute(
            sa.update(JourneyScheduleRun)
            .where(
                JourneyScheduleRun.journey_id == plan.journey_id, JourneyScheduleRun.slot == slot
            )
            .values(entered=entered)
        )
        db.session.commit()
        fired[plan.journey_id] = {"slot": slot, "entered": entered}
    return fired
