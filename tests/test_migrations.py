"""Alembic migrations: one head, and upgrade → downgrade → upgrade on SQLite and PostgreSQL."""

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from flask_migrate import downgrade, upgrade

from cdp.app import MIGRATIONS_DIR
from cdp.db import db
from tests.conftest import make_app

CORE_TABLES = {
    "users",
    "user_sessions",
    "api_tokens",
    "sources",
    "audit_log",
    "profiles",
    "identities",
    "events",
    "job_runs",
}


def table_names(app) -> set[str]:
    with app.app_context():
        return set(sa.inspect(db.engine).get_table_names()) - {"alembic_version"}


def test_single_head_and_readable_revision_names():
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", MIGRATIONS_DIR)
    script = ScriptDirectory.from_config(config)
    assert len(script.get_heads()) == 1
    for revision in script.walk_revisions():
        assert revision.doc and revision.doc.strip(), f"revision {revision.revision} has no message"


def roundtrip(app) -> None:
    with app.app_context():
        upgrade()
    assert CORE_TABLES <= table_names(app)
    with app.app_context():
        downgrade(revision="base")
    assert table_names(app) == set()
    with app.app_context():
        upgrade()
        db.engine.dispose()
    assert CORE_TABLES <= table_names(app)


def test_upgrade_downgrade_upgrade_on_sqlite(tmp_path):
    roundtrip(make_app(f"sqlite:///{tmp_path}/m.db"))


@pytest.mark.services
def test_upgrade_downgrade_upgrade_on_postgresql(postgres_url):
    app = make_app(postgres_url)
    roundtrip(app)
    with app.app_context():
        db.engine.dispose()


def test_models_match_migrations(app):
    """Autogenerate finds nothing to do: every model change came with a migration."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with app.app_context(), db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, db.metadata)
    assert diff == []
