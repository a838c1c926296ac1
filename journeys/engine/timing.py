"""Local time for a profile: wait targets, date traits, and the quiet-hours window."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import current_app

from journeys.definition import MISSING, lookup, parse_duration
from journeys.settings import setting

DEFAULT_AT = "09:00"


def zone_of(traits: dict | None) -> ZoneInfo:
    """The profile's own time zone (trait ``timezone``), else the configured one."""
    name = (traits or {}).get("timezone")
    if isinstance(name, str) and name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return ZoneInfo(current_app.config.get("TIMEZONE", "Asia/Shanghai"))


def _hm(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def next_local_time(after: datetime, at: str, zone: ZoneInfo) -> datetime:
    """The first moment at local ``HH:MM`` that is at or after ``after``."""
    local = after.astimezone(zone)
    candidate = datetime.combine(local.date(), _hm(at), zone)
    if candidate < local:
        candidate = datetime.combine(local.date() + timedelta(days=1), _hm(at), zone)
    return candidate.astimezone(after.tzinfo)


def parse_date(value) -> date | None:
    if isinstance(value, str) and len(value) >= 10:
        try:
            return date.fromisoformat(value[:10])
        except ValueError:
            return None
    return None


def wait_target(step: dict, entered: datetime, traits: dict, context: dict) -> datetime | None:
    """When a ``wait`` step that began at ``entered`` is over; None: its date is unknown."""
    if "duration" in step:
        return entered + parse_duration(step["duration"])
    zone = zone_of(traits)
    if "until_time" in step:
        return next_local_time(entered, step["until_time"], zone)
    name = step["until_trait"]
    if name.startswith("context."):
        value = lookup(context, name[len("context.") :])
    else:
        value = (traits or {}).get(name, MISSING)
    day = parse_date(value)
    if day is None:
        return None
    day += timedelta(days=step.get("offset_days", 0))
    at = datetime.combine(day, _hm(step.get("at", DEFAULT_AT)), zone)
    return at.astimezone(entered.tzinfo)


def quiet_window(definition: dict) -> tuple[str, str] | None:
    """(start, end) local times of the journey's quiet hours, or None when disabled."""
    quiet = definition.get("quiet_hours") or {}
    if quiet.get("enabled", True) is False:
        return None
    start, end = setting("JOURNEY_QUIET_HOURS")
    return quiet.get("start", start), quiet.get("end", end)


def quiet_until(now: datetime, window: tuple[str, str] | None, traits: dict) -> datetime | None:
    """If ``now`` falls in the quiet hours (local to the profile), when they end; else None."""
    if window is None:
        return None
    start, end = (_hm(text) for text in window)
    if start == end:
        return None
    zone = zone_of(traits)
    local = now.astimezone(zone)
    clock = local.time()
    overnight = start > end  # e.g. 22:00-08:00
    inside = (clock >= start or clock < end) if overnight else (start <= clock < end)
    if not inside:
        return None
    return next_local_time(now, window[1], zone)


def local_date(now: datetime, traits: dict | None = None) -> date:
    return now.astimezone(zone_of(traits)).date()
