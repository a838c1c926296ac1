"""Minors (PIPL Art. 28/31): under-14s get no marketing unless a guardian consented.

Age comes from the profile's ``birth_date`` (or ``birthday``) trait, ISO ``YYYY-MM-DD``, on
the calendar of the platform time zone; an ``age`` trait is used when there is no date.
A profile without either is treated as an adult (there is nothing to go on).
"""

from __future__ import annotations

from datetime import date, datetime

from cdp.consent import has_consent
from cdp.content.library import local_date
from cdp.models import Profile

MINOR_AGE = 14
GUARDIAN_PURPOSE = "guardian"


def _parse_date(value) -> date | None:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value)[:10])
    except (TypeError, ValueError):
        return None


def age_on(birth: date, day: date) -> int:
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def is_minor(profile: Profile, day: date) -> bool:
    traits = profile.traits or {}
    birth = _parse_date(traits.get("birth_date") or traits.get("birthday"))
    if birth is not None:
        return age_on(birth, day) < MINOR_AGE
    age = traits.get("age")
    if isinstance(age, int | float) and not isinstance(age, bool):
        return age < MINOR_AGE
    return False


def marketing_blocked_as_minor(profile: Profile, at: datetime) -> bool:
    """True for an under-14 without a recorded guardian consent."""

    return is_minor(profile, local_date(at)) and not has_consent(profile.id, GUARDIAN_PURPOSE)
