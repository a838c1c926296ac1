"""The global control group: a stable share of profiles that no marketing journey touches."""

from __future__ import annotations

import sqlalchemy as sa

from journeys.settings import setting

_MULTIPLIER = 2654435761  # Knuth's multiplicative hash: consecutive ids spread evenly
_MODULUS = 1000003


def _bucket_sql(profile_id_column, salt: int):
    return ((profile_id_column * _MULTIPLIER + salt) % _MODULUS) % 100


def bucket(profile_id: int, salt: int | None = None) -> int:
    """0..99; the profile is in the control group when it is below the configured percent."""
    salt = setting("JOURNEY_GLOBAL_CONTROL_SALT") if salt is None else salt
    return ((profile_id * _MULTIPLIER + salt) % _MODULUS) % 100


def in_global_control(profile_id: int) -> bool:
    return bucket(profile_id) < int(setting("JOURNEY_GLOBAL_CONTROL_PERCENT"))


def control_clause(profile_id_column):
    """SQL: the profile id column is in the global control group (same answer as above)."""
    percent = int(setting("JOURNEY_GLOBAL_CONTROL_PERCENT"))
    if percent <= 0:
        return sa.false()
    return _bucket_sql(profile_id_column, int(setting("JOURNEY_GLOBAL_CONTROL_SALT"))) < percent
