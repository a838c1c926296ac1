"""Conditions on the event log: count, sum, last and first occurrence, and refill lapse.

Each compiles to ``profiles.id IN (SELECT profile_id FROM events ... GROUP BY profile_id
HAVING ...)``; when the comparison also holds for profiles without any matching event
(``count <= 1``, ``sum < 100``) those are added with ``NOT IN``. Only events up to ``now``
count. Purchases of medicines are health data (PIPL): see ``uses_health_data``. Conditions
on purchase events that the purchase-line projection answers exactly read it instead of the
events' JSON (``segments.conditions.lines``).
"""

from __future__ import annotations

import operator
from datetime import datetime

import sqlalchemy as sa

from cdp.models import Event
from segments.conditions.base import (
    PROFILES,
    Condition,
    Context,
    Facts,
    condition_schema,
    register,
    scoped,
)
from segments.conditions.lines import EVENT_FIELDS, LinePlan, line_plan
from segments.conditions.planner import event_columns
from segments.sqljson import ColumnRef
from segments.values import fresh_name, json_type, lookup, py_match, sql_match, value_problems

EVENTS = Event.__table__
# Events about medicine purchases or use, and properties that describe medicines.
HEALTH_EVENTS = frozenset(
    {"pos_purchase", "order_completed", "refill_reminder_open", "prescription_uploaded"}
)
HEALTH_PROPERTIES = frozenset(
    {"items", "rx", "drug_code", "drug_name", "therapeutic_area", "diagnosis", "prescription"}
)
COMPARE = {
    "equals": operator.eq,
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}
EVENT_NAME = {"type": "string", "minLength": 1, "maxLength": 200}
COMMON = {
    "event": {
        "oneOf": [
            EVENT_NAME,
            {"type": "array", "items": EVENT_NAME, "minItems": 1, "maxItems": 20},
        ]
    },
    "where": {"type": "array", "items": {"$ref": "#/$defs/filter"}, "maxItems": 20},
}


def _measure(number: dict) -> dict:
    return {
        "op": {"enum": [*COMPARE, "between"]},
        "value": {
            "oneOf": [number, {"type": "array", "items": number, "minItems": 2, "maxItems": 2}]
        },
    }


MEASURE_RULE = {
    "if": {"properties": {"op": {"const": "between"}}},
    "then": {"properties": {"value": {"type": "array"}}},
    "else": {"properties": {"value": {"type": "number"}}},
}


def compare(value, op: str, operand) -> bool:
    if op == "between":
        return operand[0] <= value <= operand[1]
    return COMPARE[op](value, operand)


def sql_compare(expr, op: str, operand):
    if op == "between":
        return expr.between(operand[0], operand[1])
    return COMPARE[op](expr, operand)


def _path(dotted: str) -> tuple[str, ...]:
    return tuple(dotted.split("."))


def parse_time(text: str) -> datetime | None:
    try:
        value = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    return value if value.tzinfo is not None else None


class EventCondition(Condition):
    """Shared by the event conditions: names, property filters and the time window."""

    group = "events"
    window = True

    def reads_properties(self) -> bool:
        """Whether the SQL reads each matching event's properties (not just the index)."""
        return bool(self.node.get("where"))

    def names(self) -> list[str]:
        event = self.node["event"]
        return [event] if isinstance(event, str) else list(dict.fromkeys(event))

    def depends_on(self):
        return {f"event:{name}" for name in self.names()}

    def uses_health_data(self):
        if HEALTH_EVENTS.intersection(self.names()):
            return True
        return any(_path(f["property"])[0] in HEALTH_PROPERTIES for f in self.node.get("where", []))

    def problems(self, _loader):
        found = []
        within = self.node.get("within") or {}
        for key in ("from", "to"):
            if key in within and parse_time(within[key]) is None:
                found.append((f"within/{key}", "must be a date-time with a time zone"))
        start, end = parse_time(within.get("from", "")), parse_time(within.get("to", ""))
        if start and end and start >= end:
            found.append(("within", "from must be before to"))
        return found

    def _window(self, ctx: Context) -> tuple[datetime | None, datetime | None]:
        """(inclusive start, exclusive end or None) of the window; None: unbounded."""
        within = (self.node.get("within") or {}) if self.window else {}
        start = ctx.days_ago(within["last_days"]) if "last_days" in within else None
        if "from" in within:
            start = parse_time(within["from"])
        end = parse_time(within["to"]) if "to" in within else None
        return start, end

    # -- SQL --------------------------------------------------------------------------------
    def rows(self, ctx: Context):
        """SELECT profile_id FROM events WHERE <name, time and property filters>."""
        e = EVENTS
        start, end = self._window(ctx)
        name, ts = event_columns(ctx, self, start)
        names = self.names()
        query = sa.select(e.c.profile_id).where(
            e.c.profile_id.is_not(None),
            name == names[0] if len(names) == 1 else name.in_(names),
            ts <= ctx.now,
        )
        if start is not None:
            query = query.where(ts >= start)
        if end is not None:
            query = query.where(ts < end)
        for spec in self.node.get("where", []):
            cheap = prefilter(ctx, spec)
            if cheap is not None:
                query = query.where(cheap)
            query = query.where(sql_filter(ctx, ColumnRef(ctx.sql, e.c.properties), spec))
        return scoped(query, e.c.profile_id, ctx)

    def plan(self, ctx: Context) -> LinePlan | None:
        """How to read purchase lines instead of events, when they answer this exactly."""
        return line_plan(ctx, self.names(), self.node.get("where", []))

    def grouped(self, ctx: Context, measure: str, aggregate):
        """(matching rows, the same grouped by profile, the aggregate): from purchase lines
        when they answer the condition, else from events (``aggregate`` over them)."""
        plan = self.plan(ctx)
        if plan is None:
            rows = self.rows(ctx)
            return rows, rows.group_by(EVENTS.c.profile_id), aggregate
        start, end = self._window(ctx)
        grouped, aggregate = plan.grouped(ctx, self.names(), start, end, measure)
        return plan.rows(ctx, self.names(), start, end), grouped, aggregate

    def aggregate_in(self, ctx: Context, measure: str, aggregate, op: str, operand, zero):
        """Profiles whose aggregate over matching events satisfies op, plus those with none
        when the empty aggregate (``zero``) does."""
        rows, grouped, aggregate = self.grouped(ctx, measure, aggregate)
        matched = PROFILES.c.id.in_(grouped.having(sql_compare(aggregate, op, operand)))
        if zero is not None and compare(zero, op, operand):
            return sa.or_(matched, PROFILES.c.id.not_in(rows))
        return matched

    # -- Python -----------------------------------------------------------------------------
    def matching(self, facts: Facts, ctx: Context) -> list[tuple[datetime, dict]]:
        names = set(self.names())
        start, end = self._window(ctx)
        filters = self.node.get("where", [])
        return [
            (ts, props)
            for name, ts, props in facts.events
            if name in names
            and ts <= ctx.now
            and (start is None or ts >= start)
            and (end is None or ts < end)
            and all(py_filter(props, spec) for spec in filters)
        ]


def _wanted_strings(spec: dict) -> list[str] | None:
    """The strings an ``equals`` / ``in`` filter requires (None: not such a filter)."""
    if spec.get("op") not in ("equals", "in") or "any" in spec:
        return None
    values = spec["value"] if spec["op"] == "in" else [spec["value"]]
    return values if all(isinstance(v, str) for v in values) else None


def prefilter(ctx: Context, spec: dict):
    """A cheap test every event matching a top-level filter passes (see SqlJson.may_contain),
    or None: on SQLite it spares parsing the JSON of most rows."""
    properties = EVENTS.c.properties
    if "any" not in spec:
        wanted = _wanted_strings(spec)
        return (
            None
            if wanted is None
            else ctx.sql.may_contain(properties, _path(spec["property"]), wanted)
        )
    for sub in spec["any"]:
        wanted = _wanted_strings(sub)
        if wanted is not None and "property" in sub:
            path = _path(sub["property"])
            return ctx.sql.may_contain(properties, path, wanted, spec["property"])
    return None


def sql_filter(ctx: Context, ref, spec: dict):
    path = _path(spec["property"]) if "property" in spec else ()
    if "any" not in spec:
        return sql_match(ctx.sql, ref, path, spec["op"], spec.get("value"))
    table, element = ref.elements(path, fresh_name())
    inner = [sql_filter(ctx, element, sub) for sub in spec["any"]]
    found = sa.exists(sa.select(sa.literal(1)).select_from(table).where(*inner))
    return sa.and_(ref.json_type(path).is_("array"), found)


def py_filter(obj, spec: dict) -> bool:
    path = _path(spec["property"]) if "property" in spec else ()
    present, value = lookup(obj, path)
    if "any" not in spec:
        return py_match(present, value, spec["op"], spec.get("value"))
    return isinstance(value, list) and any(
        all(py_filter(item, sub) for sub in spec["any"]) for item in value
    )


WINDOW = {"$ref": "#/$defs/window"}


@register
class EventCount(EventCondition):
    type = "event_count"
    label = "Number of events"
    schema = condition_schema(
        {**COMMON, "within": WINDOW, **_measure({"type": "integer", "minimum": 0})},
        ["event", "op", "value"],
        allOf=[MEASURE_RULE],
    )
    example = {
        "type": "event_count",
        "event": "pos_purchase",
        "where": [
            {"property": "items", "any": [{"property": "rx", "op": "equals", "value": False}]}
        ],
        "within": {"last_days": 90},
        "op": "gte",
        "value": 2,
    }

    def problems(self, loader):
        found = super().problems(loader)
        return found + [("value", p) for p in value_problems(self.node["op"], self.node["value"])]

    def compile(self, ctx):
        count = sa.func.count()
        return self.aggregate_in(ctx, "count", count, self.node["op"], self.node["value"], 0)

    def evaluate(self, facts, ctx):
        return compare(len(self.matching(facts, ctx)), self.node["op"], self.node["value"])

    @property
    def time_based(self):
        return "last_days" in (self.node.get("within") or {})


@register
class EventSum(EventCondition):
    type = "event_sum"
    label = "Sum of an event property"
    schema = condition_schema(
        {
            **COMMON,
            "within": WINDOW,
            "property": {"$ref": "#/$defs/path"},
            **_measure({"type": "number"}),
        },
        ["event", "property", "op", "value"],
        allOf=[MEASURE_RULE],
    )
    example = {
        "type": "event_sum",
        "event": ["pos_purchase", "order_completed"],
        "property": "total_cny",
        "within": {"last_days": 365},
        "op": "gte",
        "value": 1000,
    }

    def problems(self, loader):
        found = super().problems(loader)
        return found + [("value", p) for p in value_problems(self.node["op"], self.node["value"])]

    def uses_health_data(self):
        return super().uses_health_data() or _path(self.node["property"])[0] in HEALTH_PROPERTIES

    def reads_properties(self):
        return True

    def plan(self, ctx):
        return super().plan(ctx) if self.node["property"] in EVENT_FIELDS else None

    def compile(self, ctx):
        amount = ctx.sql.json_num(EVENTS.c.properties, _path(self.node["property"]))
        total = sa.func.coalesce(sa.func.sum(amount), 0)
        return self.aggregate_in(ctx, "sum", total, self.node["op"], self.node["value"], 0)

    def evaluate(self, facts, ctx):
        path = _path(self.node["property"])
        total = 0
        for _ts, props in self.matching(facts, ctx):
            present, value = lookup(props, path)
            if json_type(present, value) == "number":
                total += value
        return compare(total, self.node["op"], self.node["value"])

    @property
    def time_based(self):
        return "last_days" in (self.node.get("within") or {})


class Occurrence(EventCondition):
    """The time of the last (or first) matching event, relative to now."""

    window = False
    time_based = True
    measure = "max"
    pick = staticmethod(max)
    schema = condition_schema(
        {
            **COMMON,
            "op": {"enum": ["within_last_days", "more_than_days_ago"]},
            "days": {"type": "integer", "minimum": 0, "maximum": 3650},
        },
        ["event", "op", "days"],
    )

    def compile(self, ctx):
        cutoff = ctx.days_ago(self.node["days"])
        when = getattr(sa.func, self.measure)(EVENTS.c.timestamp)
        _rows, grouped, when = self.grouped(ctx, self.measure, when)
        test = when >= cutoff if self.node["op"] == "within_last_days" else when < cutoff
        return PROFILES.c.id.in_(grouped.having(test))

    def evaluate(self, facts, ctx):
        times = [ts for ts, _props in self.matching(facts, ctx)]
        if not times:
            return False
        cutoff = ctx.days_ago(self.node["days"])
        when = self.pick(times)
        return when >= cutoff if self.node["op"] == "within_last_days" else when < cutoff


@register
class EventLast(Occurrence):
    type = "event_last"
    label = "Last time of an event"
    example = {
        "type": "event_last",
        "event": "article_read",
        "op": "more_than_days_ago",
        "days": 60,
    }


@register
class EventFirst(Occurrence):
    type = "event_first"
    label = "First time of an event"
    measure = "min"
    pick = staticmethod(min)
    example = {"type": "event_first", "event": "subscribe", "op": "within_last_days", "days": 30}
