"""Journey engine settings: defaults, overridable in the app config (see docs/journeys.md)."""

from __future__ import annotations

from flask import Flask, current_app

DEFAULTS = {
    # Percent of profiles (stable by id) that no marketing journey touches: the programme's
    # control group. Changing the salt reshuffles who is in it.
    "JOURNEY_GLOBAL_CONTROL_PERCENT": 5,
    "JOURNEY_GLOBAL_CONTROL_SALT": 7919,
    # No sends between these local times (the profile's time zone, else TIMEZONE).
    "JOURNEY_QUIET_HOURS": ("22:00", "08:00"),
    # channel -> (marketing messages, per days) across all journeys.
    "JOURNEY_FREQUENCY_CAPS": {"wechat": (3, 7), "miniprogram": (3, 7), "sms": (3, 7)},
    # Transient provider errors: attempts before a send is marked failed, first backoff.
    "JOURNEY_SEND_ATTEMPTS": 6,
    "JOURNEY_RETRY_SECONDS": 30,
    # Seconds between sweeps for due instances and deliveries.
    "JOURNEY_SWEEP_SECONDS": 5,
    # Instances advanced / deliveries performed per job.
    "JOURNEY_BATCH": 500,
    # How long a worker's claim on an instance or delivery lasts (then it may be retried).
    "JOURNEY_LEASE_SECONDS": 120,
    # Webhook steps may only call https URLs, or http on these hosts (tests, intranet).
    "JOURNEY_WEBHOOK_ALLOWED_HOSTS": (),
}


def setting(name: str):
    return current_app.config.get(name, DEFAULTS[name])


def init_app(app: Flask) -> None:
    """Fill in defaults; numbers given as text (environment variables) become numbers."""
    for name, value in DEFAULTS.items():
        current = app.config.get(name)
        if current is None:
            app.config[name] = value
        elif isinstance(value, int) and isinstance(current, str):
            app.config[name] = int(current)
        elif isinstance(value, tuple) and isinstance(current, str):  # comma separated
            app.config[name] = tuple(part.strip() for part in current.split(",") if part.strip())
