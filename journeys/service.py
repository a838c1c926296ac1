"""Journey lifecycle: drafts, immutable published versions, pause/resume/archive, test mode, dry run.

Draft → published → paused ⇄ published → archived. Publishing validates the draft, pins the
approved content versions and stores a new ``JourneyVersion``; people already inside stay
on the version they entered unless the marketer migrates them with a step-id mapping. Each
operation takes the actor, checks its permission, owns its transaction and is audited.
"""

from __future__ import annotations

import copy
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm.attributes import flag_modified

from cdp import audit
from cdp.actors import Actor
from cdp.auth.permissions import require
from cdp.db import db, lock_for_writing, transaction, utcnow
from cdp.exceptions import Conflict, NotFound, ValidationFailed
from cdp.models import Profile
from journeys.definition import steps_by_id
from journeys.models import (
    JOURNEY_STATUSES,
    LIVE_STATES,
    Delivery,
    Journey,
    JourneyInstance,
    JourneyStepLog,
    JourneyVersion,
)
from journeys.validation import InvalidDefinition, pin_content, validate

__all__ = ["InvalidDefinition"]  # raised by publish and dry_run; web maps it to 422 + problems

MAX_TEST_PROFILES = 50
LOCK_WAIT_MS = 10_000
MAX_ID = 2**31 - 1
MAX_PROFILE_ID = 2**63 - 1
INST = JourneyInstance.__table__
# Which status each lifecycle action leaves from (publish: see ``publish``).
TRANSITIONS = {
    "pause": (("published",), "paused"),
    "resume": (("paused",), "published"),
    "archive": (("draft", "published", "paused"), "archived"),
}


def get_journey(journey_id: int) -> Journey:
    in_range = 1 <= journey_id <= MAX_ID  # a larger id cannot exist and must not reach SQL
    journey = db.session.get(Journey, journey_id) if in_range else None
    if journey is None:
        raise NotFound("no such journey", "journey_id")
    return journey


def list_journeys(status: str | None = None) -> list[Journey]:
    query = sa.select(Journey).order_by(Journey.updated_at.desc(), Journey.id.desc())
    if status is not None:
        if status not in JOURNEY_STATUSES:
            raise ValidationFailed(f"status must be one of {', '.join(JOURNEY_STATUSES)}", "status")
        query = query.where(Journey.status == status)
    return list(db.session.scalars(query))


def list_versions(journey_id: int) -> list[JourneyVersion]:
    """Published versions, newest first."""
    get_journey(journey_id)
    query = sa.select(JourneyVersion).where(JourneyVersion.journey_id == journey_id)
    return list(db.session.scalars(query.order_by(JourneyVersion.number.desc())))


def get_version(journey_id: int, number: int) -> JourneyVersion:
    get_journey(journey_id)
    version = (
        None
        if number > MAX_ID
        else db.session.scalar(
            sa.select(JourneyVersion).where(
                JourneyVersion.journey_id == journey_id, JourneyVersion.number == number
            )
        )
    )
    if version is None:
        raise NotFound("no such version of this journey", "number")
    return version


def _name(name) -> str:
    name = name.strip() if isinstance(name, str) else ""
    if not 1 <= len(name) <= 120:
        raise ValidationFailed("name must be 1 to 120 characters", "name")
    return name


def _draft(definition) -> dict:
    # A draft may be incomplete or invalid (the builder saves as you go), but it is an object.
    if not isinstance(definition, dict):
        raise ValidationFailed("a journey definition must be a JSON object", "definition")
    return definition


def _editable(journey: Journey) -> None:
    if journey.status == "archived":
        raise Conflict("an archived journey cannot be changed", "status")


def create_journey(actor: Actor, name: str, definition: dict, description: str = "") -> Journey:
    """Save a new draft journey (the definition may still be invalid)."""
    require(actor, "journeys:edit")
    with transaction() as session:
        journey = Journey(
            name=_name(name),
            description=(description or "")[:2000],
            draft=copy.deepcopy(_draft(definition)),
            status="draft",
            created_by_id=actor.user_id,
        )
        session.add(journey)
        session.flush()
        audit.record(actor, "journey.create", "journey", journey.id)
    return journey


def update_journey(
    actor: Actor, journey_id: int, *, name=None, description=None, definition=None
) -> Journey:
    """Change the draft (name, description, definition); the published version is untouched."""
    require(actor, "journeys:edit")
    journey = get_journey(journey_id)
    _editable(journey)
    changed = []
    with transaction():
        if name is not None:
            journey.name = _name(name)
            changed.append("name")
        if description is not None:
            journey.description = description[:2000]
            changed.append("description")
        if definition is not None:
            # A copy, flagged: the caller may have edited the loaded draft in place.
            journey.draft = copy.deepcopy(_draft(definition))
            flag_modified(journey, "draft")
            changed.append("definition")
        journey.updated_at = utcnow()
        audit.record(actor, "journey.update", "journey", journey.id, fields=changed)
    return journey


# --- publishing ---------------------------------------------------------------------------------


def _mapping(migrate, step_ids: set[str]) -> dict[str, str]:
    if not isinstance(migrate, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in migrate.items()
    ):
        raise ValidationFailed("migrate maps old step ids to new step ids (strings)", "migrate")
    unknown = sorted(v for v in set(migrate.values()) if v not in step_ids)
    if unknown:
        raise ValidationFailed(
            f"migrate: the new version has no step {', '.join(map(repr, unknown))}", "migrate"
        )
    return migrate


def _migrate(journey_id: int, version_id: int, definition: dict, mapping: dict[str, str]) -> int:
    """Move live instances of older versions onto the new one, in SQL; refuse unknown steps."""
    steps = steps_by_id(definition)
    mapped = (
        sa.case(mapping, value=INST.c.step_id, else_=INST.c.step_id) if mapping else INST.c.step_id
    )
    live_old = sa.and_(
        INST.c.journey_id == journey_id,
        INST.c.version_id != version_id,
        INST.c.state.in_(LIVE_STATES),
    )
    stranded = db.session.execute(
        sa.select(INST.c.step_id, mapped, sa.func.count())
        .where(live_old, mapped.not_in(list(steps)))
        .group_by(INST.c.step_id, mapped)
    ).all()
    if stranded:
        _refuse(stranded)
    # An instance waiting for an event listens for the event of the step it lands on.
    events = {i: s["event"] for i, s in steps.items() if s["type"] == "wait_for_event"}
    listening = sa.case(events, value=mapped, else_=None) if events else sa.null()
    waiting = sa.case((INST.c.waiting_event.is_(None), None), else_=listening)
    moved = db.session.execute(
        sa.update(INST)
        .where(live_old)
        .values(version_id=version_id, step_id=mapped, waiting_event=waiting)
    ).rowcount
    # A worker may have moved someone between the check and the UPDATE (PostgreSQL re-reads
    # locked rows): check again what landed; raising rolls the whole publish back.
    landed = db.session.execute(
        sa.select(INST.c.step_id, INST.c.step_id, sa.func.count())
        .where(
            INST.c.version_id == version_id,
            INST.c.state.in_(LIVE_STATES),
            INST.c.step_id.not_in(list(steps)),
        )
        .group_by(INST.c.step_id)
    ).all()
    if landed:
        _refuse(landed)
    return moved


def _refuse(stranded: list) -> None:
    where = "; ".join(
        f"{n} at {old!r}" + (f" (mapped to {new!r})" if new != old else "")
        for old, new, n in stranded
    )
    raise ValidationFailed(
        f"live instances would land on steps the new version does not have: {where}. "
        "Map those steps with migrate.",
        "migrate",
    )


def publish(
    actor: Actor, journey_id: int, *, migrate: dict[str, str] | None = None, note: str = ""
) -> JourneyVersion:
    """Validate the draft and make it the live version (content versions pinned).

    :raise InvalidDefinition: listing every problem; nothing is published.
    """
    require(actor, "journeys:publish")
    journey = get_journey(journey_id)
    _editable(journey)
    at = utcnow()
    draft = journey.draft
    problems = validate(draft, at)
    if problems:
        raise InvalidDefinition(problems)
    definition = pin_content(draft, at)
    mapping = _mapping(migrate, set(steps_by_id(definition))) if migrate is not None else None
    with transaction() as session:
        lock_for_writing(session, LOCK_WAIT_MS)
        # Row lock on PostgreSQL: two publishes of one journey take turns for the number.
        session.execute(sa.select(Journey.id).where(Journey.id == journey_id).with_for_update())
        last = session.scalar(
            sa.select(sa.func.max(JourneyVersion.number)).where(
                JourneyVersion.journey_id == journey_id
            )
        )
        version = JourneyVersion(
            journey_id=journey_id,
            number=(last or 0) + 1,
            definition=definition,
            published_at=at,
            published_by_id=actor.user_id,
            note=(note or "")[:2000],
        )
        session.add(version)
        session.flush()
        moved = _migrate(journey_id, version.id, definition, mapping) if mapping is not None else 0
        journey.live_version, journey.status, journey.updated_at = version.number, "published", at
        audit.record(
            actor, "journey.publish", "journey", journey_id, version=version.number, migrated=moved
        )
    return version


# --- pause, resume, archive ---------------------------------------------------------------------


def _move(actor: Actor, journey_id: int, action: str) -> tuple[Journey, datetime]:
    """Check the permission and the transition; the caller's transaction applies it."""
    require(actor, "journeys:publish")
    journey = get_journey(journey_id)
    sources, target = TRANSITIONS[action]
    if journey.status not in sources:
        raise Conflict(f"cannot {action} a journey that is {journey.status}", "status")
    now = utcnow()
    journey.status, journey.updated_at = target, now
    return journey, now


def pause(actor: Actor, journey_id: int) -> Journey:
    """Stop a published journey: no one enters and instances wait where they are."""
    with transaction():
        journey, _ = _move(actor, journey_id, "pause")
        audit.record(actor, "journey.pause", "journey", journey_id)
    return journey


def resume(actor: Actor, journey_id: int) -> Journey:
    with transaction():
        journey, _ = _move(actor, journey_id, "resume")
        audit.record(actor, "journey.resume", "journey", journey_id)
    return journey


def archive(actor: Actor, journey_id: int) -> Journey:
    """End a journey for good: live instances exit ("archived"), pending sends are skipped."""
    with transaction() as session:
        lock_for_writing(session, LOCK_WAIT_MS)
        journey, now = _move(actor, journey_id, "archive")
        live = sa.and_(INST.c.journey_id == journey_id, INST.c.state.in_(LIVE_STATES))
        # The step log says where they left, like any other exit.
        session.execute(
            sa.insert(JourneyStepLog).from_select(
                ["instance_id", "journey_id", "version_id", "step_id", "outcome", "at"],
                sa.select(
                    INST.c.id,
                    INST.c.journey_id,
                    INST.c.version_id,
                    INST.c.step_id,
                    sa.literal("exited:archived"),
                    sa.literal(now, JourneyStepLog.at.type),
                ).where(live, INST.c.step_id.is_not(None)),
            )
        )
        ended = session.execute(
            sa.update(INST)
            .where(live)
            .values(
                state="exited",
                exit_reason="archived",
                ended_at=now,
                next_run_at=None,
                lease_until=None,
                waiting_event=None,
            )
        ).rowcount
        skipped = session.execute(
            sa.update(Delivery)
            .where(Delivery.journey_id == journey_id, Delivery.status.in_(("pending", "deferred")))
            .values(
                status="skipped", reason="journey_archived", next_attempt_at=None, updated_at=now
            )
        ).rowcount
        audit.record(
            actor, "journey.archive", "journey", journey_id, instances=ended, deliveries=skipped
        )
    return journey


# --- test mode and dry run ----------------------------------------------------------------------


def set_test_mode(
    actor: Actor, journey_id: int, *, enabled: bool, profile_ids: list[int]
) -> Journey:
    """Run the journey for these profiles only, with sends going to the preview log."""
    require(actor, "journeys:edit")
    journey = get_journey(journey_id)
    _editable(journey)
    if not isinstance(profile_ids, list) or not all(
        type(p) is int and 1 <= p <= MAX_PROFILE_ID for p in profile_ids
    ):
        raise ValidationFailed("profile_ids must be a list of profile ids", "profile_ids")
    ids = list(dict.fromkeys(profile_ids))
    if len(ids) > MAX_TEST_PROFILES:
        raise ValidationFailed(f"at most {MAX_TEST_PROFILES} test profiles", "profile_ids")
    if enabled and not ids:
        raise ValidationFailed("test mode needs at least one test profile", "profile_ids")
    live = set(
        db.session.scalars(
            sa.select(Profile.id).where(Profile.id.in_(ids), Profile.merged_into_id.is_(None))
        )
    )
    missing = [p for p in ids if p not in live]
    if missing:
        listed = ", ".join(map(str, missing))
        raise ValidationFailed(f"no such (live) profile: {listed}", "profile_ids")
    with transaction():
        journey.test_mode, journey.test_profile_ids = bool(enabled), ids
        journey.updated_at = utcnow()
        audit.record(
            actor,
            "journey.test_mode",
            "journey",
            journey_id,
            enabled=bool(enabled),
            profiles=len(ids),
        )
    return journey
