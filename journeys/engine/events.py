"""What each committed batch of events does to journeys: entries, wake-ups, exits, goals.

Registered as an ingest event processor (``cdp.ingest.tasks``), so it runs once per outbox
batch after the events are committed; it must be idempotent (a batch can be processed
again): entries are unique per (journey, profile, entry key, rotation), wake-ups only move
``next_run_at`` earlier, exits and conversions only touch instances not yet marked.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta

import sqlalchemy as sa

from cdp.consent import refused_profiles
from cdp.db import db, lock_for_writing, utcnow
from cdp.models import ConsentState, Event
from journeys.definition import where_matches
from journeys.engine.entry import Candidate, enter_candidates
from journeys.engine.plans import running_plans
from journeys.engine.triggers import candidates
from journeys.models import LIVE_STATES, Delivery, JourneyInstance, JourneyStepLog
from journeys.tasks import kick

I = JourneyInstance.__table__  # noqa: E741
SEGMENT_ENTERED, SEGMENT_EXITED = "segment_entered", "segment_exited"


def process_events(event_ids: list[int], profile_ids: list[int]) -> None:
    plans = running_plans()
    if not plans or not event_ids:
        return
    _refusals(plans, profile_ids, utcnow())
    live = [plan for plan in plans if plan.live and plan.status == "published"]
    names = set().union(*(plan.event_names() for plan in plans)) | {SEGMENT_ENTERED, SEGMENT_EXITED}
    events = db.session.execute(
        sa.select(Event.id, Event.profile_id, Event.name, Event.timestamp, Event.properties)
        .where(Event.id.in_(event_ids), Event.name.in_(names), Event.profile_id.is_not(None))
        .order_by(Event.id)
    ).all()
    if not events:
        return
    now = utcnow()
    lock_for_writing(db.session, wait_ms=30_000)
    started = _enter(live, events, now)
    woken = _wake(events, now)
    _exit(plans, events, now)
    _convert(plans, events)
    db.session.commit()
    if started or woken:
        kick()


def _enter(plans, events, now) -> list[int]:
    started = []
    for plan in plans:
        trigger = plan.trigger
        found = []
        for event_id, profile_id, name, at, properties in events:
            properties = properties or {}
            if trigger["type"] == "event":
                found += candidates(plan, profile_id, event_id, name, at, properties)
            elif (
                trigger["type"] == "segment_entry"
                and name == SEGMENT_ENTERED
                and properties.get("segment_id") == trigger["segment_id"]
            ):
                context = {"event_id": event_id, "segment_id": trigger["segment_id"]}
                found.append(Candidate(profile_id, "", context))
        if found:
            started += enter_candidates(plan, found, now)
    return started


def _refusals(plans, profile_ids: list[int], now) -> None:
    """PIPL Art. 24: a refusal of automated marketing ends every marketing journey at once."""
    marketing = [plan.version_id for plan in plans if plan.marketing]
    if not marketing or not profile_ids:
        return
    refused = refused_profiles("automated_marketing").where(
        ConsentState.profile_id.in_(profile_ids)
    )
    ids = db.session.scalars(
        sa.select(I.c.id).where(
            I.c.version_id.in_(marketing),
            I.c.profile_id.in_(refused),
            I.c.state.in_(LIVE_STATES),
        )
    ).all()
    if ids:
        lock_for_writing(db.session, wait_ms=30_000)
        _end_instances(list(ids), "automated_marketing_refused", now)
        db.session.commit()


def _wake(events, now) -> list[int]:
    """Instances waiting for one of these events run now (the runner checks the match)."""
    by_name = defaultdict(set)
    for _, profile_id, name, _, _ in events:
        by_name[name].add(profile_id)
    woken = []
    for name, profile_ids in by_name.items():
        woken += db.session.scalars(
            sa.update(I)
            .where(
                I.c.waiting_event == name,
                I.c.profile_id.in_(profile_ids),
                I.c.state == "waiting",
            )
            .values(next_run_at=now)
            .returning(I.c.id)
        ).all()
    return woken


def _end_instances(ids: list[int], reason: str, now) -> None:
    if not ids:
        return
    rows = db.session.execute(
        sa.update(I)
        .where(I.c.id.in_(ids), I.c.state.in_(LIVE_STATES))
        .values(state="exited", exit_reason=reason, ended_at=now, next_run_at=None,
                waiting_event=None)
        .returning(I.c.id, I.c.journey_id, I.c.version_id, I.c.step_id)
    ).all()  # fmt: skip
    if rows:
        db.session.execute(
            sa.insert(JourneyStepLog),
            [{"instance_id": i, "journey_id": j, "version_id": v, "step_id": s,
              "outcome": f"exited:{reason}", "at": now} for i, j, v, s in rows],
        )  # fmt: skip
        db.session.execute(
            sa.update(Delivery)
            .where(Delivery.instance_id.in_([row[0] for row in rows]),
                   Delivery.status == "pending")
            .values(status="skipped", reason="instance_exited", next_attempt_at=None,
                    updated_at=now)
        )  # fmt: skip


def _exit(plans, events, now) -> None:
    """Exit criteria: an exit event, or leaving a segment named in ``exit``."""
    for plan in plans:
        for criterion in plan.exits:
            profiles = set()
            for _, profile_id, name, _, properties in events:
                properties = properties or {}
                if "event" in criterion:
                    hit = name == criterion["event"] and where_matches(
                        criterion.get("where"), properties
                    )
                else:
                    hit = (
                        name == SEGMENT_EXITED
                        and properties.get("segment_id") == criterion["segment_exit"]
                    )
                if hit:
                    profiles.add(profile_id)
            if profiles:
                ids = db.session.scalars(
                    sa.select(I.c.id).where(
                        I.c.version_id == plan.version_id,
                        I.c.profile_id.in_(profiles),
                        I.c.state.in_(LIVE_STATES),
                    )
                ).all()
                reason = "exit_event" if "event" in criterion else "segment_exit"
                _end_instances(list(ids), reason, now)


def _convert(plans, events) -> None:
    """Goal conversions: the goal event within the window after entry (holdouts included)."""
    done = set()
    for plan in plans:
        goal = plan.goal
        if not goal or plan.journey_id in done:
            continue
        done.add(plan.journey_id)
        window = timedelta(days=goal["within_days"])
        for _, profile_id, name, at, properties in events:
            if name != goal["event"] or not where_matches(goal.get("where"), properties or {}):
                continue
            db.session.execute(
                sa.update(I)
                .where(
                    I.c.journey_id == plan.journey_id,
                    I.c.profile_id == profile_id,
                    I.c.converted_at.is_(None),
                    I.c.entered_at <= at,
                    I.c.entered_at >= at - window,
                )
                .values(converted_at=at)
            )
