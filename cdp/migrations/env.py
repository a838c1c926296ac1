"""Alembic environment: runs migrations against the app's database (online mode only)."""

import logging
from logging.config import fileConfig

from alembic import context
from flask import current_app

import cdp.models  # noqa: F401  (registers every table on the metadata for autogenerate)
import connectors.models  # noqa: F401
import journeys.models  # noqa: F401
import segments.models  # noqa: F401
import segments.propensity.models  # noqa: F401

config = context.config
if config.config_file_name is not None and not config.attributes.get("quiet"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)
logger = logging.getLogger("alembic.env")


def run_migrations_online() -> None:
    db = current_app.extensions["migrate"].db
    engine = db.engine
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=db.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `cdp db upgrade`")
run_migrations_online()
