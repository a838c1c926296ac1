"""Conditions on the profile row: kind, traits, and calendar rules on date traits."""

from __future__ import annotations

import calendar
import re
from datetime import timedelta

import sqlalchemy as sa

from segments.conditions.base import PROFILES, Condition, Context, Facts, condition_schema, register
from segments.sqljson import ColumnRef
from segments.values import lookup, op_schema, py_match, sql_match, value_problems

_ISO_SHAPE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
DATE_TRAIT = {"$ref": "#/$defs/path", "default": "birth_date"}


def _path(dotted: str) -> tuple[str, ...]:
    return tuple(dotted.split("."))


def iso_date(present: bool, value) -> str | None:
    """The YYYY-MM-DD prefix of a string trait, or None (the SQL checks the same shape)."""
    if not present or not isinstance(value, str) or not _ISO_SHAPE.match(value):
        return None
    if not ("01" <= value[5:7] <= "12" and "01" <= value[8:10] <= "31"):
        return None
    return value[:10]


def _sql_iso_date(ctx: Context, path: tuple[str, ...]):
    """(is an ISO date, its YYYY-MM-DD prefix) for a trait, in SQL."""
    ref = ColumnRef(ctx.sql, PROFILES.c.traits)
    text = ref.json_text(path)
    valid = sa.and_(ref.json_type(path).is_("string"), ctx.sql.iso_date_prefix(text))
    return valid, ctx.sql.text(sa.func.substr(text, 1, 10))


@register
class ProfileKind(Condition):
    type = "profile_kind"
    label = "Profile kind"
    schema = condition_schema({"kind": {"enum": ["patient", "hcp"]}}, ["kind"])
    example = {"type": "profile_kind", "kind": "patient"}

    def compile(self, ctx):
        return PROFILES.c.kind == self.node["kind"]

    def evaluate(self, facts: Facts, ctx):
        return facts.kind == self.node["kind"]


_TRAIT_OP = op_schema("trait")


@register
class Trait(Condition):
    type = "trait"
    label = "Trait"
    schema = {
        **_TRAIT_OP,
        "properties": {"type": True, **_TRAIT_OP["properties"]},
        "required": ["type", *_TRAIT_OP["required"]],
        "additionalProperties": False,
    }
    example = {"type": "trait", "trait": "city", "op": "in", "value": ["上海", "北京"]}

    def problems(self, _loader):
        return [("value", p) for p in value_problems(self.node["op"], self.node.get("value"))]

    def compile(self, ctx):
        ref = ColumnRef(ctx.sql, PROFILES.c.traits)
        path = _path(self.node["trait"])
        return sql_match(ctx.sql, ref, path, self.node["op"], self.node.get("value"))

    def evaluate(self, facts, ctx):
        present, value = lookup(facts.traits, _path(self.node["trait"]))
        return py_match(present, value, self.node["op"], self.node.get("value"))


def birthday_days(ctx: Context, within: int) -> list[str]:
    """MM-DD of today .. today + within; Feb 29 birthdays count on Feb 28 in common years."""
    days = set()
    for offset in range(within + 1):
        day = ctx.today + timedelta(days=offset)
        days.add(day.strftime("%m-%d"))
        if day.month == 2 and day.day == 28 and not calendar.isleap(day.year):
            days.add("02-29")
    return sorted(days)


@register
class Birthday(Condition):
    type = "birthday"
    label = "Birthday within N days"
    schema = condition_schema(
        {"trait": DATE_TRAIT, "within_days": {"type": "integer", "minimum": 0, "maximum": 366}},
        ["within_days"],
    )
    example = {"type": "birthday", "trait": "birth_date", "within_days": 7}
    time_based = True

    def compile(self, ctx):
        valid, text = _sql_iso_date(ctx, _path(self.node.get("trait", "birth_date")))
        month_day = sa.func.substr(text, 6, 5)
        return sa.and_(valid, month_day.in_(birthday_days(ctx, self.node["within_days"])))

    def evaluate(self, facts, ctx):
        text = iso_date(*lookup(facts.traits, _path(self.node.get("trait", "birth_date"))))
        return text is not None and text[5:] in birthday_days(ctx, self.node["within_days"])


AGE = {"type": "integer", "minimum": 0, "maximum": 150}


def age_bounds(op: str, value) -> tuple[int | None, int | None]:
    """(minimum age, maximum age) for an age comparison."""
    if op == "between":
        return value[0], value[1]
    return {
        "gte": (value, None),
        "gt": (value + 1, None),
        "lte": (None, value),
        "lt": (None, value - 1),
        "equals": (value, value),
    }[op]


@register
class Age(Condition):
    type = "age"
    label = "Age (from date of birth)"
    schema = condition_schema(
        {
            "trait": DATE_TRAIT,
            "op": {"enum": ["equals", "gt", "gte", "lt", "lte", "between"]},
            "value": {
                "oneOf": [AGE, {"type": "array", "items": AGE, "minItems": 2, "maxItems": 2}]
            },
        },
        ["op", "value"],
        allOf=[
            {
                "if": {"properties": {"op": {"const": "between"}}},
                "then": {"properties": {"value": {"type": "array"}}},
                "else": {"properties": {"value": {"type": "integer"}}},
            }
        ],
    )
    example = {"type": "age", "trait": "birth_date", "op": "between", "value": [45, 75]}
    time_based = True

    def problems(self, _loader):
        return [("value", p) for p in value_problems(self.node["op"], self.node["value"])]

    def _cutoff(self, ctx: Context, age: int) -> str:
        """The latest birth date of someone at least ``age`` years old today."""
        today = ctx.today
        return f"{today.year - age:04d}-{today.month:02d}-{today.day:02d}"

    def compile(self, ctx):
        valid, text = _sql_iso_date(ctx, _path(self.node.get("trait", "birth_date")))
        low, high = age_bounds(self.node["op"], self.node["value"])
        parts = [valid]
        if low is not None:
            parts.append(text <= self._cutoff(ctx, low))
        if high is not None:
            parts.append(text > self._cutoff(ctx, high + 1))
        return sa.and_(*parts)

    def evaluate(self, facts, ctx):
        text = iso_date(*lookup(facts.traits, _path(self.node.get("trait", "birth_date"))))
        if text is None:
            return False
        year, month, day = int(text[:4]), int(text[5:7]), int(text[8:10])
        today = ctx.today
        age = today.year - year - ((today.month, today.day) < (month, day))
        low, high = age_bounds(self.node["op"], self.node["value"])
        return (low is None or age >= low) and (high is None or age <= high)


DATE_OPS = ("within_last_days", "more_than_days_ago", "within_next_days", "more_than_days_ahead")


@register
class DateTrait(Condition):
    type = "date_trait"
    label = "Date trait relative to today"
    schema = condition_schema(
        {
            "trait": {"$ref": "#/$defs/path"},
            "op": {"enum": list(DATE_OPS)},
            "days": {"type": "integer", "minimum": 0, "maximum": 36500},
        },
        ["trait", "op", "days"],
    )
    example = {"type": "date_trait", "trait": "member_since", "op": "within_last_days", "days": 30}
    time_based = True

    def _bounds(self, ctx: Context) -> tuple[str | None, str | None]:
        """Inclusive (low, high) ISO dates; exclusive ends are moved by a day."""
        days, today, op = self.node["days"], ctx.today, self.node["op"]
        day = timedelta(days=1)
        if op == "within_last_days":
            return (today - timedelta(days=days)).isoformat(), today.isoformat()
        if op == "more_than_days_ago":
            return None, (today - timedelta(days=days) - day).isoformat()
        if op == "within_next_days":
            return today.isoformat(), (today + timedelta(days=days)).isoformat()
        return (today + timedelta(days=days) + day).isoformat(), None

    def compile(self, ctx):
        valid, text = _sql_iso_date(ctx, _path(self.node["trait"]))
        low, high = self._bounds(ctx)
        parts = [valid]
        if low is not None:
            parts.append(text >= low)
        if high is not None:
            parts.append(text <= high)
        return sa.and_(*parts)

    def evaluate(self, facts, ctx):
        text = iso_date(*lookup(facts.traits, _path(self.node["trait"])))
        low, high = self._bounds(ctx)
        return text is not None and (low is None or text >= low) and (high is None or text <= high)
