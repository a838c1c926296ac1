"""Reading a journey definition: the schema, durations, steps by id, event property filters."""

from __future__ import annotations

import functools
import json
from datetime import timedelta
from pathlib import Path

SCHEMA_PATH = Path(__file__).parent / "schema" / "journey.schema.json"
UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
# Steps that wait: a cycle through one of them cannot spin.
WAIT_STEPS = ("wait", "wait_for_event")
# Steps that perform a side effect through the delivery outbox.
EFFECT_STEPS = (
    "send",
    "issue_coupon",
    "award_points",
    "update_trait",
    "webhook",
    "invite_to_meeting",
)
MISSING = object()


@functools.cache
def schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def parse_duration(text: str) -> timedelta:
    """``30m``, ``12h``, ``7d``, ``2w`` as a timedelta."""
    return timedelta(**{UNITS[text[-1]]: int(text[:-1])})


def steps_by_id(definition: dict) -> dict[str, dict]:
    return {step["id"]: step for step in definition.get("steps", [])}


def successors(step: dict) -> list[str]:
    """The step ids a step can lead to, in the order the builder draws them."""
    kind = step["type"]
    if kind == "wait_for_event":
        return [step["next"], step["timeout_next"]]
    if kind == "branch":
        return [step["then"], step["else"]]
    if kind == "split":
        return [path["next"] for path in step["paths"] if path.get("next")]
    return [step["next"]] if step.get("next") else []


def lookup(data: dict, path: str):
    """The value at a dotted path (``properties.drug_code`` or ``drug_code``), or MISSING."""
    value = data
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return MISSING
        value = value[key]
    return value


def event_value(properties: dict, path: str):
    """A filter's property path is relative to the event's properties (``properties.`` optional)."""
    if path.startswith("properties."):
        path = path[len("properties.") :]
    return lookup(properties, path)


def _compare(op: str, actual, expected) -> bool:
    try:
        if op == "gt":
            return actual > expected
        if op == "gte":
            return actual >= expected
        if op == "lt":
            return actual < expected
        return actual <= expected
    except TypeError:
        return False


def filter_matches(condition: dict, properties: dict) -> bool:
    op, expected = condition["op"], condition.get("value")
    actual = event_value(properties, condition["property"])
    if op == "exists":
        return actual is not MISSING and actual is not None
    if actual is MISSING:
        return op in ("not_equals", "not_in")
    if op == "equals":
        return actual == expected
    if op == "not_equals":
        return actual != expected
    if op == "in":
        return actual in expected
    if op == "not_in":
        return actual not in expected
    if op == "contains":
        if isinstance(actual, list):
            return expected in actual
        return isinstance(actual, str) and str(expected) in actual
    return _compare(op, actual, expected)


def where_matches(where: list[dict] | None, properties: dict | None) -> bool:
    """Every filter of an event condition holds for these event properties."""
    properties = properties or {}
    return all(filter_matches(condition, properties) for condition in where or [])


def entry_key_of(trigger: dict, properties: dict | None) -> str | None:
    """The entry key an event gives (``""`` when the trigger has none; None: key missing)."""
    path = trigger.get("entry_key")
    if not path:
        return ""
    value = event_value(properties or {}, path)
    if value is MISSING or value is None or value == "":
        return None
    return str(value)[:128]
