"""Journeys: declarative definitions, the engine over DB-persisted instances, channel delivery."""

from flask import Flask


def init_app(app: Flask) -> None:
    """Nothing to wire yet; the journey engine adds its jobs and sweep hooks here."""
