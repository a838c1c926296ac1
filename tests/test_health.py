"""Liveness and readiness probes for load balancers."""

import pytest

from tests.conftest import make_app


def test_healthz_answers_without_login(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_readyz_checks_the_database(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json["checks"] == {"database": True}


def test_readyz_is_503_when_the_database_is_unreachable(tmp_path):
    app = make_app(f"sqlite:///{tmp_path}/missing-dir/cdp.db")
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json["checks"]["database"] is False


def test_readyz_is_503_when_redis_is_configured_but_down(app):
    app = make_app(app.config["SQLALCHEMY_DATABASE_URI"], REDIS_URL="redis://127.0.0.1:9/0")
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json["checks"] == {"database": True, "redis": False}


@pytest.mark.services
def test_readyz_with_real_redis(app, redis_url):
    app = make_app(app.config["SQLALCHEMY_DATABASE_URI"], REDIS_URL=redis_url)
    response = app.test_client().get("/readyz")
    assert response.status_code == 200
    assert response.json["checks"] == {"database": True, "redis": True}
