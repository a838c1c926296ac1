"""Journeys: declarative definitions, the engine over DB-persisted instances, channel delivery."""

from flask import Flask

from cdp.ingest.tasks import register_event_processor
from cdp.privacy.export import register_export_section
from cdp.queue import register_periodic
from journeys import (
    hcp_actions,  # noqa: F401  (registers the invite_to_meeting step's action)
    models,  # noqa: F401  (the tables join the app's metadata)
    privacy,
    settings,
)
from journeys.channels import receipts
from journeys.cli import journeys_group
from journeys.engine import events
from journeys.tasks import periodic_jobs


def init_app(app: Flask) -> None:
    """Wire the engine's event processors and periodic jobs (sweep, schedules)."""
    settings.init_app(app)
    app.cli.add_command(journeys_group)
    register_event_processor("journeys", events.process_events)
    register_event_processor("journey-receipts", receipts.process_events)
    register_export_section("journeys", privacy.export_section)
    for job in periodic_jobs(int(app.config["JOURNEY_SWEEP_SECONDS"])):
        register_periodic(job)
