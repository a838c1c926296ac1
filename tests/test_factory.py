"""The application factory: configuration from the environment and production safety."""

import pytest

from cdp import create_app
from cdp.config import ConfigError


def test_default_app_is_embedded_sqlite_development(monkeypatch, tmp_path):
    app = create_app()
    assert not app.testing
    assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path}/instance/cdp.db"
    assert app.config["TIMEZONE"] == "Asia/Shanghai"
    assert app.config["EMBEDDED_WORKER"] is True
    assert app.config["BABEL_DEFAULT_LOCALE"] == "zh_CN"


def test_reads_cdp_environment_variables(monkeypatch):
    monkeypatch.setenv("CDP_DATABASE_URL", "sqlite:////tmp/elsewhere.db")
    monkeypatch.setenv("CDP_TIMEZONE", "Asia/Urumqi")
    monkeypatch.setenv("CDP_SECRET_KEY", "s3cret-from-env")
    app = create_app()
    assert app.config["SQLALCHEMY_DATABASE_URI"] == "sqlite:////tmp/elsewhere.db"
    assert app.config["TIMEZONE"] == "Asia/Urumqi"
    assert app.config["SECRET_KEY"] == "s3cret-from-env"


@pytest.mark.parametrize(
    "missing", ["CDP_SECRET_KEY", "CDP_PII_KEY", "CDP_REDIS_URL"], ids=lambda n: f"without-{n}"
)
def test_production_refuses_default_secrets_or_missing_redis(monkeypatch, missing):
    monkeypatch.setenv("CDP_ENV", "production")
    settings = {
        "CDP_SECRET_KEY": "a-real-secret-key",
        "CDP_PII_KEY": "a-real-pii-key",
        "CDP_REDIS_URL": "redis://127.0.0.1:1/0",
    }
    for name, value in settings.items():
        if name != missing:
            monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=missing.replace("CDP_", "CDP_")):
        create_app()


def test_production_cookies_are_host_prefixed_and_secure(monkeypatch):
    monkeypatch.setenv("CDP_ENV", "production")
    monkeypatch.setenv("CDP_SECRET_KEY", "a-real-secret-key")
    monkeypatch.setenv("CDP_PII_KEY", "a-real-pii-key")
    monkeypatch.setenv("CDP_REDIS_URL", "redis://127.0.0.1:1/0")
    app = create_app()
    assert app.config["SESSION_COOKIE_NAME"].startswith("__Host-")
    assert app.config["SESSION_COOKIE_SECURE"] is True
    assert app.config["SESSION_COOKIE_HTTPONLY"] is True
    assert app.config["SESSION_COOKIE_SAMESITE"] == "Lax"
    assert app.config["EMBEDDED_WORKER"] is False
