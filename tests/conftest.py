"""Shared fixtures: an app on a freshly migrated database per test, client, CLI runner, logins."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from flask_migrate import upgrade

from cdp import create_app
from cdp.actors import SYSTEM
from cdp.auth import accounts
from cdp.db import db

pytest_plugins = ["tests.services"]

TEST_PASSWORD = "correct horse battery"


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch, tmp_path):
    """Tests never see the developer's CDP_* settings or write to ./instance."""
    for name in list(os.environ):
        if name.startswith("CDP_") and name != "CDP_REQUIRE_SERVICES":
            monkeypatch.delenv(name)
    monkeypatch.setenv("CDP_INSTANCE_PATH", str(tmp_path / "instance"))


def make_app(database_url: str, **overrides):
    config = {
        "TESTING": True,
        "SQLALCHEMY_DATABASE_URI": database_url,
        "SECRET_KEY": "test-secret",
        "PII_KEY": "test-pii-key",
        "JOB_RETRIES": 0,
        # Most tests read profiles right after posting; tests/test_ingest_deferred.py covers
        # the default, where the drain job resolves them.
        "INGEST_DEFER_RESOLUTION": False,
    }
    config.update(overrides)
    return create_app(config)


def migrate(app) -> None:
    with app.app_context():
        upgrade()
        db.engine.dispose()


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory):
    """A SQLite file built once by running every migration; each test gets a copy."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    os.environ.setdefault("CDP_INSTANCE_PATH", str(path.parent / "instance"))
    migrate(make_app(f"sqlite:///{path}"))
    return path


@pytest.fixture
def app(migrated_sqlite, tmp_path):
    path = tmp_path / "cdp.db"
    shutil.copy(migrated_sqlite, path)
    application = make_app(f"sqlite:///{path}")
    yield application
    with application.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def app_ctx(app):
    with app.app_context():
        yield app


def make_user(app, role: str = "admin", email: str | None = None, password=TEST_PASSWORD):
    """Create a user directly through the domain operation; returns the user id."""
    email = email or f"{role}@test.cn"
    with app.app_context():
        user, _ = accounts.create_user(SYSTEM, email, role, password)
        return user.id


def csrf_token_from(html: str) -> str:
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html)
    assert match, "no CSRF token in page"
    return match.group(1)


@dataclass
class AuthActions:
    client: object
    app: object

    def login(self, email="admin@test.cn", password=TEST_PASSWORD, follow=False):
        page = self.client.get("/login")
        token = csrf_token_from(page.get_data(as_text=True))
        return self.client.post(
            "/login",
            data={"email": email, "password": password, "csrf_token": token},
            follow_redirects=follow,
        )

    def logout(self):
        page = self.client.get("/")
        token = csrf_token_from(page.get_data(as_text=True))
        return self.client.post("/logout", data={"csrf_token": token})


@pytest.fixture
def auth(client, app):
    return AuthActions(client, app)


@pytest.fixture
def admin(app):
    return make_user(app, "admin")


def count(app, model) -> int:
    with app.app_context():
        return db.session.scalar(sa.select(sa.func.count()).select_from(model))
