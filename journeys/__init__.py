"""Journeys: declarative definitions, the engine over DB-persisted instances, channel delivery."""

from flask import Flask

from journeys import (
    models,  # noqa: F401  (the tables join the app's metadata)
    settings,
)


def init_app(app: Flask) -> None:
    """Wire the engine's event processor, periodic jobs, sweep hooks and CLI."""
    settings.init_app(app)
