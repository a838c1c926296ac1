"""The target of a model (an event name plus property filters) and who did it, and when.

Filters are the rule language's ``where`` (docs/segments.md), checked by the same schema
and compiled by the same code as an ``event_count`` condition, so "bought a statin at a
pharmacy" means the same thing in a segment and in a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import sqlalchemy as sa

from cdp.consent import granted_profiles
from cdp.db import db, utcnow
from cdp.exceptions import ValidationFailed
from cdp.models import Event, Source
from segments import definition as definitions
from segments.conditions import REGISTRY, Context
from segments.conditions.events import prefilter, sql_filter
from segments.propensity.common import dialect, epoch_seconds, fetch
from segments.sqljson import ColumnRef

EVENTS = Event.__table__
# Derived events (segment entries and exits) come from internal sources and are never data.
INTERNAL_KINDS = ("internal",)


@dataclass(frozen=True)
class Target:
    event: str
    where: list = field(default_factory=list)

    def node(self) -> dict:
        node = {"type": "event_count", "event": self.event, "op": "gte", "value": 1}
        if self.where:
            node["where"] = self.where
        return node

    @property
    def health_data(self) -> bool:
        """Medicine purchases (or filters on medicine properties) are PIPL health data."""
        return REGISTRY["event_count"](self.node()).uses_health_data()

    def as_dict(self) -> dict:
        return {"event": self.event, "where": list(self.where)}


def check_target(event: str, where=None) -> Target:
    """:raise ValidationFailed: naming the part of ``where`` that is wrong."""
    event = (event or "").strip()
    if not 1 <= len(event) <= 200:
        raise ValidationFailed("target event must be 1 to 200 characters", "target_event")
    where = [] if where is None else where
    if not isinstance(where, list):
        raise ValidationFailed("where must be a JSON list of property filters", "where")
    target = Target(event, where)
    problems = definitions.validate({"rule": target.node()})
    if problems:
        first = problems[0]
        path = first.path.removeprefix("/rule").lstrip("/") or "target_event"
        raise ValidationFailed(f"{path}: {first.message}", path)
    return target


def internal_sources() -> list[str]:
    return list(db.session.scalars(sa.select(Source.id).where(Source.kind.in_(INTERNAL_KINDS))))


def _matching(target: Target):
    """(SELECT ... FROM events WHERE name = target and its filters), to add columns to."""
    ctx = Context(now=utcnow(), dialect=dialect())
    query = sa.select().where(EVENTS.c.profile_id.is_not(None), EVENTS.c.name == target.event)
    if target.health_data:  # PIPL: nobody's purchases are read without their consent
        query = query.where(EVENTS.c.profile_id.in_(granted_profiles("health_data")))
    for spec in target.where:
        cheap = prefilter(ctx, spec)
        if cheap is not None:
            query = query.where(cheap)
        query = query.where(sql_filter(ctx, ColumnRef(ctx.sql, EVENTS.c.properties), spec))
    return query


def target_occurs(target: Target) -> bool:
    """Whether any event of the target's name was ever recorded (its filters aside)."""
    query = sa.select(EVENTS.c.id).where(EVENTS.c.name == target.event).limit(1)
    return db.session.execute(query).first() is not None


def labelled(target: Target, start: datetime, end: datetime) -> np.ndarray:
    """Sorted ids of profiles with a matching event in (start, end]."""
    query = (
        _matching(target)
        .add_columns(EVENTS.c.profile_id)
        .where(EVENTS.c.timestamp > start, EVENTS.c.timestamp <= end)
        .distinct()
    )
    return np.unique(fetch(query, 1)[:, 0].astype(np.int64))


def history(target: Target, cutoff: datetime, windows: tuple[int, ...]) -> np.ndarray:
    """Per profile, matching events strictly before the cutoff: counts in each window (days),
    and the time of the last one (epoch seconds). Columns: id, counts..., last."""
    ts = EVENTS.c.timestamp
    counts = [
        sa.func.sum(sa.case((ts >= cutoff - timedelta(days=days), 1), else_=0)) for days in windows
    ]
    query = (
        _matching(target)
        .add_columns(EVENTS.c.profile_id, *counts, sa.func.max(epoch_seconds(ts, dialect())))
        .where(ts < cutoff, ts >= cutoff - timedelta(days=max(windows)))
        .group_by(EVENTS.c.profile_id)
    )
    return fetch(query, len(windows) + 2)


def data_end() -> datetime | None:
    """The time of the latest event (derived events excluded): labels cannot look past it."""
    query = sa.select(sa.func.max(EVENTS.c.timestamp))
    internal = internal_sources()
    if internal:
        query = query.where(EVENTS.c.source_id.not_in(internal))
    return db.session.scalar(query)
