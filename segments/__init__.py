"""Segments: rule language compiled to SQL, real-time membership, propensity models."""

from flask import Flask

from cdp.ingest.tasks import register_event_processor
from cdp.queue import register_periodic
from segments.cli import segments_group
from segments.propensity.cli import features_group, models_group
from segments.propensity.tasks import RESCORE
from segments.realtime import process_events
from segments.tasks import PERIODIC


def init_app(app: Flask) -> None:
    """Wire the event processor (real time), the scheduled refresh and rescoring, the CLI."""
    from segments import models  # noqa: F401  (the tables join the app's metadata)
    from segments.propensity import models as propensity_models  # noqa: F401

    register_event_processor("segments", process_events)
    register_periodic(PERIODIC)
    register_periodic(RESCORE)
    app.cli.add_command(segments_group)
    app.cli.add_command(models_group)
    app.cli.add_command(features_group)
