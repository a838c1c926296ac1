"""Purchase rules answered from the purchase-line projection instead of the event JSON.

An event condition over purchase events only (``cdp.models.purchases.PURCHASE_EVENTS``)
whose filters the projection's typed columns answer exactly (``items[].drug_code`` /
``rx`` / ``qty`` / ``days_of_supply`` and ``total_cny``, compared with an
operand of the column's JSON type) reads ``purchase_lines`` by index. Anything else
(negated operators, other properties, several ``items`` filters) reads the events as before.
A projected value is NULL unless the JSON value has the column's type, and the tests below
only hold for a value of that type, so both paths give the same answer.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import sqlalchemy as sa

from cdp.models.purchases import LOCAL_OFFSET, PURCHASE_EVENTS, SUPPLY_CAP, PurchaseLine
from segments.conditions.base import Context, scoped
from segments.sqljson import no_index

LINES = PurchaseLine.__table__
ITEM_FIELDS = {
    "drug_code": ("string", LINES.c.drug_code),
    "rx": ("boolean", LINES.c.rx),
    "qty": ("number", LINES.c.quantity),
    "days_of_supply": ("number", LINES.c.days_of_supply),
}
EVENT_FIELDS = {"total_cny": ("number", LINES.c.total)}
ORDER = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}
LOCAL_MINUTES = int(LOCAL_OFFSET.total_seconds() // 60)


def _typed(value, kind: str) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    return isinstance(value, int | float) and not isinstance(value, bool)


def _walk_profiles(ctx: Context) -> bool:
    """A real-time check of a few profiles on SQLite: hide the other indexes from its planner
    so it walks their lines (profile index), never every line of a drug code."""
    return ctx.dialect == "sqlite" and (ctx.scope is not None or ctx.scope_table)


def column_test(ctx: Context, field: tuple, spec: dict):
    """The filter as a test of a projected column, or None when it cannot be one."""
    kind, column = field
    if "any" in spec:
        return None
    if kind == "string":
        column = ctx.sql.text(column)
    if _walk_profiles(ctx):
        column = no_index(column)
    op, value = spec["op"], spec.get("value")
    if op == "equals" and _typed(value, kind):
        return column == value
    if kind == "boolean":
        return None
    if op == "in" and all(_typed(v, kind) for v in value):
        return column.in_(value)
    if op == "between" and all(_typed(v, kind) for v in value):
        return column.between(value[0], value[1])
    if op in ORDER and _typed(value, kind):
        return ORDER[op](column, value)
    return None


@dataclass
class LinePlan:
    """Where a purchase condition reads: its tests on purchase_lines, and whether rows are
    item lines (several per event) or one row per event (``line <= 1``)."""

    tests: list
    per_line: bool
    by_code: bool = False  # one of the tests is on drug_code

    def rows(self, ctx: Context, names: list[str], start, end, *columns) -> sa.Select:
        c = LINES.c
        ts = c.timestamp
        if ctx.dialect == "sqlite" and not self.by_code and ctx.scope is None:
            # Most lines of the window: read the (profile, …) index in order, which covers
            # the rule and needs no sort to group, not the drug code index row by row.
            ts = no_index(ts)
        query = sa.select(*(columns or (c.profile_id,))).where(
            c.profile_id.is_not(None),
            c.event_name == names[0] if len(names) == 1 else c.event_name.in_(names),
            ts <= ctx.now,
            c.line >= 1 if self.per_line else c.line <= 1,
            *self.tests,
        )
        if start is not None:
            query = query.where(ts >= start)
        if end is not None:
            query = query.where(ts < end)
        return scoped(query, c.profile_id, ctx)

    def grouped(self, ctx: Context, names: list[str], start, end, measure: str):
        """(query grouped by profile, its aggregate): ``count`` of events, ``sum`` of their
        totals, ``max`` / ``min`` of their times."""
        c = LINES.c
        if measure == "sum" and self.per_line:
            # An event's total once, however many of its lines match.
            inner = self.rows(ctx, names, start, end, c.event_id, c.profile_id, c.total)
            events = inner.distinct().subquery()
            total = sa.func.coalesce(sa.func.sum(events.c.total), 0)
            query = sa.select(events.c.profile_id).group_by(events.c.profile_id)
            return query, total
        aggregate = {
            "count": sa.func.count(sa.distinct(c.event_id)) if self.per_line else sa.func.count(),
            "sum": sa.func.coalesce(sa.func.sum(c.total), 0),
            "max": sa.func.max(c.timestamp),
            "min": sa.func.min(c.timestamp),
        }[measure]
        return self.rows(ctx, names, start, end).group_by(c.profile_id), aggregate


def line_plan(ctx: Context, names: list[str], where: list[dict]) -> LinePlan | None:
    """The plan for a condition on these events with these filters, or None (read events)."""
    if not set(names) <= set(PURCHASE_EVENTS):
        return None
    tests, per_line, by_code = [], False, False
    for spec in where:
        if "any" in spec:
            if spec["property"] != "items" or per_line:
                return None  # two item filters may match different lines of one event
            per_line = True
            for sub in spec["any"]:
                field = ITEM_FIELDS.get(sub.get("property", ""))
                test = column_test(ctx, field, sub) if field else None
                if test is None:
                    return None
                tests.append(test)
                by_code |= sub["property"] == "drug_code"
        else:
            field = EVENT_FIELDS.get(spec["property"])
            test = column_test(ctx, field, spec) if field else None
            if test is None:
                return None
            tests.append(test)
    return LinePlan(tests, per_line, by_code)


def lapsed_profiles(ctx: Context, names: list[str], codes, lookback, last_day) -> sa.Select:
    """Profiles whose latest run-out date among the matching lines is on or before
    ``last_day`` (the refill-lapse rule, see ``segments.conditions.medication``)."""
    c = LINES.c
    supply = c.days_of_supply
    if _walk_profiles(ctx):
        supply = no_index(supply)
    plan = LinePlan([supply > 0], per_line=True, by_code=codes is not None)
    if codes is not None:
        plan.tests += [column_test(ctx, ITEM_FIELDS["drug_code"], {"op": "in", "value": codes})]
    if ctx.offset_minutes == LOCAL_MINUTES:
        runs_out = c.runs_out  # stored with the same offset
    else:
        days = ctx.sql.floor_days(c.days_of_supply, SUPPLY_CAP)
        runs_out = ctx.sql.local_date_plus(c.timestamp, days, ctx.offset_minutes)
    query = plan.rows(ctx, names, lookback, None).group_by(c.profile_id)
    return query.having(sa.func.max(runs_out) <= ctx.sql.date_literal(last_day))
