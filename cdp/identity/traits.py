"""Profile traits: which keys are personal data, and merging by event time (latest wins)."""

from __future__ import annotations

from datetime import datetime

# Identifying traits: stored only inside the profile's encrypted PII blob, never in clear.
PII_TRAIT_KEYS = frozenset(
    {
        "name",
        "firstName",
        "first_name",
        "lastName",
        "last_name",
        "phone",
        "mobile",
        "email",
        "address",
        "idCard",
        "id_card",
        "idNumber",
        "id_number",
    }
)


def split_traits(traits: dict) -> tuple[dict, dict]:
    """Split traits into (plain, personal) dictionaries."""
    plain, personal = {}, {}
    for key, value in traits.items():
        (personal if key in PII_TRAIT_KEYS else plain)[key] = value
    return plain, personal


def apply_by_time(
    values: dict, times: dict, incoming: dict, at: datetime, prefix: str = ""
) -> bool:
    """Set each incoming key unless a later event already set it; return True if anything changed.

    ``times`` maps ``prefix + key`` to the ISO time of the event that last set the key.
    """
    changed = False
    stamp = at.isoformat()
    for key, value in incoming.items():
        slot = prefix + key
        if times.get(slot, "") > stamp:
            continue
        if values.get(key) != value or times.get(slot) != stamp:
            values[key] = value
            times[slot] = stamp
            changed = True
    return changed


def merge_by_time(
    into: dict, into_times: dict, other: dict, other_times: dict, prefix: str = ""
) -> None:
    """Fold another profile's traits in, keeping for each key the value set latest."""
    for key, value in other.items():
        slot = prefix + key
        if key not in into or other_times.get(slot, "") > into_times.get(slot, ""):
            into[key] = value
            if slot in other_times:
                into_times[slot] = other_times[slot]
