"""Profile traits: which keys are personal data, merging by event time (latest wins), and the
in-memory state of a profile while a batch is resolved."""

from __future__ import annotations

from dataclasses import dataclass, field
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


@dataclass
class NewProfile:
    """A profile first seen in the batch being resolved (inserted when resolution ends)."""

    kind: str
    traits: dict = field(default_factory=dict)
    trait_times: dict = field(default_factory=dict)
    pii: dict = field(default_factory=dict)
    first_seen_at: datetime | None = None
    last_seen_at: datetime | None = None


@dataclass
class StoredProfile:
    """The columns of a stored profile that resolution reads and may change."""

    id: int
    kind: str
    traits: dict
    trait_times: dict
    pii_encrypted: bytes | None
    first_seen_at: datetime | None
    last_seen_at: datetime | None
    merged_into_id: int | None
    merged_at: datetime | None = None  # when it lost a merge in this batch

    def update_row(self, now: datetime) -> dict:
        """Parameters of the executemany UPDATE writing it back (``b_id`` selects the row)."""
        return {
            "b_id": self.id,
            "traits": self.traits,
            "trait_times": self.trait_times,
            "first_seen_at": self.first_seen_at,
            "last_seen_at": self.last_seen_at,
            "merged_into_id": self.merged_into_id,
            "updated_at": self.merged_at or now,
        }


# The columns resolution reads of a stored profile.
STORED_COLUMNS = tuple(name for name in StoredProfile.__dataclass_fields__ if name != "merged_at")


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    return min(x for x in (a, b) if x is not None) if (a or b) else None


def latest(a: datetime | None, b: datetime | None) -> datetime | None:
    return max(x for x in (a, b) if x is not None) if (a or b) else None
