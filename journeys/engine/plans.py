"""The running journeys as plans: each live version's definition, steps and what it reacts to."""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa

from cdp.db import db
from journeys.definition import steps_by_id
from journeys.models import Journey, JourneyVersion


@dataclass
class Plan:
    """One published journey version, read once per batch of work."""

    journey_id: int
    version_id: int
    status: str  # published | paused | archived
    definition: dict
    steps: dict[str, dict] = field(default_factory=dict)
    test_mode: bool = False
    test_profile_ids: frozenset[int] = frozenset()
    live: bool = False  # the version new entrants get

    @property
    def trigger(self) -> dict:
        return self.definition["trigger"]

    @property
    def kind(self) -> str:
        return self.definition["audience"]["kind"]

    @property
    def marketing(self) -> bool:
        return self.definition.get("category", "marketing") == "marketing"

    @property
    def entry(self) -> dict:
        return self.definition.get("entry") or {}

    @property
    def exits(self) -> list[dict]:
        return self.definition.get("exit") or []

    @property
    def goal(self) -> dict | None:
        return self.definition.get("goal")

    def event_names(self) -> set[str]:
        """Event names this version reacts to (trigger, wait_for_event, exit, goal)."""
        names = {exit_["event"] for exit_ in self.exits if "event" in exit_}
        if self.live and self.trigger["type"] == "event":
            names.add(self.trigger["event"])
        names |= {s["event"] for s in self.steps.values() if s["type"] == "wait_for_event"}
        if self.goal:
            names.add(self.goal["event"])
        return names


def _plan(journey: Journey, version: JourneyVersion) -> Plan:
    return Plan(
        journey_id=journey.id,
        version_id=version.id,
        status=journey.status,
        definition=version.definition,
        steps=steps_by_id(version.definition),
        test_mode=journey.test_mode,
        test_profile_ids=frozenset(int(i) for i in journey.test_profile_ids or []),
        live=version.number == journey.live_version,
    )


def live_plans() -> list[Plan]:
    """The live version of every published journey (what new events can start)."""
    rows = db.session.execute(
        sa.select(Journey, JourneyVersion)
        .join(
            JourneyVersion,
            sa.and_(
                JourneyVersion.journey_id == Journey.id,
                JourneyVersion.number == Journey.live_version,
            ),
        )
        .where(Journey.status == "published")
    ).all()
    return [_plan(journey, version) for journey, version in rows]


def plans_for_versions(version_ids) -> dict[int, Plan]:
    """Plans of the given versions (instances run on the version they entered)."""
    if not version_ids:
        return {}
    rows = db.session.execute(
        sa.select(Journey, JourneyVersion)
        .join(JourneyVersion, JourneyVersion.journey_id == Journey.id)
        .where(JourneyVersion.id.in_(set(version_ids)))
    ).all()
    return {version.id: _plan(journey, version) for journey, version in rows}


def running_plans() -> list[Plan]:
    """Every version that may have live instances, of journeys not archived."""
    rows = db.session.execute(
        sa.select(Journey, JourneyVersion)
        .join(JourneyVersion, JourneyVersion.journey_id == Journey.id)
        .where(Journey.status.in_(("published", "paused")))
    ).all()
    return [_plan(journey, version) for journey, version in rows]
