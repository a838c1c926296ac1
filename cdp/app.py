"""The application factory: read config, wire the core, plug in the component packages."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from flask import Flask

from cdp import commands, db, hcp, pii, privacy, queue, sweeper
from cdp.config import ConfigError, base_config, finalize, from_environment
from cdp.extensions import migrate
from cdp.ingest import inbound as ingest_inbound
from cdp.ingest import tasks as ingest_tasks

MIGRATIONS_DIR = str(Path(__file__).parent / "migrations")


def create_app(config: dict | None = None) -> Flask:
    """Create and configure an instance of the CarePath CDP application."""
    instance_path = os.environ.get("CDP_INSTANCE_PATH") or None
    app = Flask("cdp", instance_path=instance_path, instance_relative_config=True)
    settings = base_config()
    settings.update(from_environment(os.environ, app.instance_path))
    settings.update(config or {})
    finalize(settings)
    if settings["PRODUCTION"] and not settings.get("REDIS_URL"):
        raise ConfigError("Refusing to start in production mode without CDP_REDIS_URL")
    app.config.update(settings)
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite:///"):
        Path(app.instance_path).mkdir(parents=True, exist_ok=True)

    db.init_app(app)
    migrate.init_app(app, db.db, directory=MIGRATIONS_DIR, render_as_batch=True)
    pii.init_app(app)
    queue.init_app(app)
    sweeper.init_app(app)
    ingest_tasks.init_app(app)
    ingest_inbound.init_app(app)
    privacy.init_app(app)  # consent from channel events, retention, content expiry
    hcp.init_app(app)  # doctors' meeting and quiz events, erasure of speakers
    commands.init_app(app)
    for name in app.config["COMPONENTS"]:
        importlib.import_module(name).init_app(app)
    return app
