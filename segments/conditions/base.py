"""The condition registry: each condition type is a class with four faces.

- ``schema``: its JSON Schema fragment (assembled into segments/schema/segment.schema.json);
- ``compile(ctx)``: a SQL boolean over the ``profiles`` table (TRUE or FALSE, never NULL);
- ``evaluate(facts, ctx)``: the same answer computed in plain Python for one profile (the
  reference the SQL is tested against);
- ``depends_on()``: what can change the answer (``event:<name>``, ``profile``,
  ``identities``, ``consent``), so real-time re-evaluation only runs affected segments.

Adding a condition type (journeys, coupons, points, propensity scores) means writing one
class and decorating it with ``@register``; planned ones are listed in ``PLANNED``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import ClassVar
from zoneinfo import ZoneInfo

import orjson
import sqlalchemy as sa

from cdp.models import Profile
from segments.sqljson import SqlJson

PROFILES = Profile.__table__

# Always re-checked: a brand-new profile, or one that absorbed another in a merge.
BASE_DEPENDENCIES = frozenset({"new_profile", "merge"})


@dataclass
class Facts:
    """Everything the reference evaluator knows about one live profile."""

    id: int
    kind: str
    traits: dict
    identities: set[tuple[str, str]] = field(default_factory=set)  # (type, namespace)
    events: list[tuple[str | None, datetime, dict]] = field(default_factory=list)
    consents: dict[tuple[str, str], str] = field(default_factory=dict)
    # model name -> (score, rank, profiles scored, health-data model) of its active version
    scores: dict[str, tuple[float, int, int, bool]] = field(default_factory=dict)
    knowledge: dict[str, float] = field(default_factory=dict)  # doctor: dimension -> score
    # (journey id, instance state, converted) of each counted journey instance
    journeys: list[tuple[int, str, bool]] = field(default_factory=list)
    # (campaign id, status, valid from, expires at) of each coupon issued to the profile
    coupons: list[tuple] = field(default_factory=list)
    points: int = 0  # balance of the profile's live points account


@dataclass
class Context:
    """When and where a definition is evaluated; one per compile or evaluation run.

    ``now`` is truncated to whole seconds (the same instant for SQL and Python); calendar
    rules (birthdays, ages, refill dates) use the local date in ``timezone``.
    """

    now: datetime
    dialect: str = "sqlite"
    timezone: str = "Asia/Shanghai"
    # segment id -> its definition (None when missing or archived)
    load_segment: Callable[[int], dict | None] = lambda _id: None
    # Real-time: only these profiles (the SQL is restricted to them); with ``scope_table``
    # the ids are read from the temporary table ``segment_scope`` instead of listed. The
    # list may be ``SCOPE_IDS``, an expanding parameter: one statement for any profiles.
    scope: list[int] | sa.BindParameter | None = None
    scope_table: bool = False
    # (event names, window start) -> share of all events they are (a planner hint); optional.
    estimate: Callable[[tuple[str, ...], datetime | None], float] | None = None
    stack: tuple[int, ...] = ()

    def __post_init__(self):
        if self.now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        self.now = self.now.astimezone(UTC).replace(microsecond=0)
        self.sql = SqlJson(self.dialect)
        local = self.now.astimezone(ZoneInfo(self.timezone))
        self.today: date = local.date()
        offset = local.utcoffset() or timedelta(0)
        self.offset_minutes = int(offset.total_seconds() // 60)

    def days_ago(self, days: int) -> datetime:
        return self.now - timedelta(days=days)

    def local_date(self, ts: datetime) -> date:
        return (ts.astimezone(UTC) + timedelta(minutes=self.offset_minutes)).date()


class Condition:
    """Base class: subclasses set ``type``, ``label``, ``schema`` and implement the faces."""

    type: ClassVar[str]
    label: ClassVar[str]  # English; the web layer translates it
    group: ClassVar[str] = "profile"
    schema: ClassVar[dict]
    example: ClassVar[dict]
    time_based: ClassVar[bool] = False

    def __init__(self, node: dict):
        self.node = node

    def problems(self, ctx_loader: Callable[[int], dict | None]) -> list[tuple[str, str]]:
        """(relative path, message) of problems the schema cannot express."""
        return []

    def depends_on(self) -> set[str]:
        return {"profile"}

    def uses_health_data(self) -> bool:
        return False

    def references(self) -> set[int]:
        return set()

    def compile(self, ctx: Context):
        raise NotImplementedError

    def evaluate(self, facts: Facts, ctx: Context) -> bool:
        raise NotImplementedError


REGISTRY: dict[str, type[Condition]] = {}

# Condition types designed but not yet available (their data does not exist yet).
PLANNED: dict[str, str] = {}


def register(cls: type[Condition]) -> type[Condition]:
    if cls.type in REGISTRY or cls.type in PLANNED:
        raise ValueError(f"condition type {cls.type!r} registered twice")
    REGISTRY[cls.type] = cls
    return cls


def condition_schema(properties: dict, required: list[str], **extra) -> dict:
    """An object schema with ``type`` plus ``properties``; nothing else allowed."""
    return {
        "type": "object",
        "properties": {"type": True, **properties},
        "required": ["type", *required],
        "additionalProperties": False,
        **extra,
    }


SCOPE = sa.table("segment_scope", sa.column("profile_id", sa.BigInteger))
# Real time: the profiles as a statement parameter, so one compiled statement serves any
# batch. SQLite reads a JSON array (an expanding list would be spliced into the SQL text at
# every execution); pass ``scope_params(ids)``.
SCOPE_IDS = sa.bindparam("scope_ids", expanding=True)
SCOPE_JSON = sa.bindparam("scope_json", type_=sa.String)


def scope_params(dialect: str, profile_ids: list[int]) -> dict:
    if dialect == "sqlite":
        return {"scope_json": orjson.dumps(profile_ids).decode()}
    return {"scope_ids": profile_ids}


def in_scope(column, ctx: Context):
    if ctx.scope_table and ctx.dialect == "postgresql":
        # = ANY(ARRAY(...)): computed once, then an index condition (PK, profile indexes), so
        # the few scoped profiles drive the query whatever the planner guesses about the rest.
        ids = sa.func.array(sa.select(SCOPE.c.profile_id).scalar_subquery())
        return column == sa.any_(ids)
    if ctx.scope_table:
        return column.in_(sa.select(SCOPE.c.profile_id))
    if ctx.scope is SCOPE_IDS and ctx.dialect == "sqlite":
        ids = sa.func.json_each(SCOPE_JSON).table_valued("value")
        return column.in_(sa.select(ids.c.value))
    return column.in_(ctx.scope)


def scoped(query, profile_column, ctx: Context):
    """Restrict a subquery over profiles' rows to the real-time scope."""
    if ctx.scope is None and not ctx.scope_table:
        return query
    return query.where(in_scope(profile_column, ctx))
