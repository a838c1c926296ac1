"""What an event means for a journey: the entries it starts and the entry key it carries."""

from __future__ import annotations

from datetime import datetime, timedelta

from journeys.definition import MISSING, event_value, where_matches
from journeys.engine.entry import Candidate
from journeys.engine.plans import Plan
from journeys.engine.timing import local_date

CONTEXT_LIMIT = 40  # scalar properties copied into an instance's context


def _scalars(data: dict) -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, str | int | float | bool) and len(out) < CONTEXT_LIMIT:
            out[key] = value[:500] if isinstance(value, str) else value
    return out


def _elements(trigger: dict, properties: dict) -> list[dict]:
    value = event_value(properties, trigger["for_each"])
    if not isinstance(value, list):
        return []
    where = trigger.get("item_where")
    return [item for item in value if isinstance(item, dict) and where_matches(where, item)]


def _key(value) -> str | None:
    if value is MISSING or value is None or value == "":
        return None
    return str(value)[:128]


def run_out_date(event_time: datetime, item: dict) -> str | None:
    supply = item.get("days_of_supply")
    if isinstance(supply, int | float) and not isinstance(supply, bool) and 0 < supply < 3650:
        return (local_date(event_time) + timedelta(days=int(supply))).isoformat()
    return None


def candidates(
    plan: Plan, profile_id: int, event_id: int, name: str, at: datetime, properties: dict
) -> list[Candidate]:
    """The entries one event starts in a journey with an event trigger (none if no match)."""
    trigger = plan.trigger
    if name != trigger["event"] or not where_matches(trigger.get("where"), properties):
        return []
    base = {**_scalars(properties), "event_id": event_id, "event_name": name}
    base["event_date"] = local_date(at).isoformat()
    if not trigger.get("for_each"):
        key = (
            _key(event_value(properties, trigger["entry_key"])) if trigger.get("entry_key") else ""
        )
        if key is None:
            return []
        return [Candidate(profile_id, key, {**base, "entry_key": key})]
    found = []
    for item in _elements(trigger, properties):
        key = _key(event_value(item, trigger["entry_key"])) if trigger.get("entry_key") else ""
        if key is None:
            continue
        context = {**base, **_scalars(item), "entry_key": key}
        context["run_out_date"] = run_out_date(at, item)
        found.append(Candidate(profile_id, key, context))
    return found


def carries_key(plan: Plan, properties: dict, key: str) -> bool:
    """Does an event carry this instance's entry key (the same medicine, the same order)?"""
    trigger = plan.trigger
    if trigger.get("type") != "event" or not trigger.get("entry_key"):
        return True
    if trigger.get("for_each"):
        return any(_key(event_value(item, trigger["entry_key"])) == key
                   for item in _elements(trigger, properties))  # fmt: skip
    return _key(event_value(properties, trigger["entry_key"])) == key
