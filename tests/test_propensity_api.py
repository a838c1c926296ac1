"""/api/v1/models: list, show, versions, train and score jobs, activate, scores, segments."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from cdp.actors import SYSTEM
from cdp.db import db
from cdp.models import JobRun
from segments.propensity import service, tasks
from segments.propensity.models import ModelVersion
from tests.conftest import make_user
from tests.test_api import bearer, issue_token
from tests.test_propensity_features import TARGET, build_world

pytestmark = pytest.mark.filterwarnings("error")


@pytest.fixture
def token(app, admin):
    return bearer(issue_token(app, admin))


@pytest.fixture
def world(app):
    with app.app_context():
        world = build_world()
        spec = service.make_spec("coupon", TARGET, "60d", world.day(100), algorithm="logistic")
        service.train_model(SYSTEM, spec)
        return world


def test_read_models_versions_and_metrics(client, token, world):
    listed = client.get("/api/v1/models", headers=token)
    assert listed.status_code == 200
    [model] = listed.json
    assert (model["name"], model["target_event"], model["versions"]) == ("coupon", TARGET, 1)
    assert model["active"]["model"]["roc_auc"] > 0.5 and "baseline" in model["active"]
    detail = client.get("/api/v1/models/coupon", headers=token).json
    assert [v["version"] for v in detail["versions"]] == [1]
    full = client.get("/api/v1/models/coupon/versions/1", headers=token).json
    assert {"lift", "calibration", "importances", "baseline"} <= set(full["metrics"])
    assert len(full["artifact"]["sha256"]) == 64
    assert client.get("/api/v1/models/coupon/versions", headers=token).json[0]["version"] == 1
    missing = client.get("/api/v1/models/nope", headers=token)
    assert missing.status_code == 404 and "no model called" in missing.json["message"]
    assert client.get("/api/v1/models/coupon/versions/9", headers=token).status_code == 404


def test_train_is_checked_then_queued(app, client, token, world):
    body = {"name": "coupon", "target_event": TARGET, "horizon": "60d",
            "cutoff": world.day(90), "algorithm": "logistic"}  # fmt: skip
    started = client.post("/api/v1/models/train", json=body, headers=token)
    assert started.status_code == 202, started.json
    with app.app_context():
        job = db.session.get(JobRun, started.json["job_id"])
        assert (job.kind, job.status) == ("models-train", "queued")
        assert job.params["cutoff"] == world.cutoff(90).isoformat()  # local midnight, in UTC
        tasks.train_job(job.id)  # what the worker does
        db.session.refresh(job)
        assert job.status == "succeeded", job.message
        assert db.session.scalar(sa.select(sa.func.count()).select_from(ModelVersion)) == 2
    body["name"] = "fresh"
    refused = client.post(
        "/api/v1/models/train", json={**body, "target_event": "never_happens"}, headers=token
    )
    assert refused.status_code == 422 and "never occurs" in refused.json["message"]
    past = client.post("/api/v1/models/train", json={**body, "cutoff": world.day(5)}, headers=token)
    assert past.status_code == 422 and "horizon past the data end" in past.json["message"]
    bad = client.post("/api/v1/models/train", json={**body, "algorithm": "forest"}, headers=token)
    assert bad.status_code == 422
    other = client.post(
        "/api/v1/models/train", json={**body, "name": "coupon", "horizon": "30d"}, headers=token
    )
    assert other.status_code == 409 and "train under a new name" in other.json["message"]


def test_score_activate_scores_and_top_segment(app, client, token, world):
    started = client.post("/api/v1/models/coupon/score", headers=token)
    assert started.status_code == 202
    with app.app_context():
        tasks.score_job(started.json["job_id"])
    page = client.get("/api/v1/models/coupon/scores?limit=5", headers=token).json
    assert [row["rank"] for row in page["items"]] == [1, 2, 3, 4, 5]
    following = client.get(
        f"/api/v1/models/coupon/scores?limit=5&cursor={page['next_cursor']}", headers=token
    )
    assert following.json["items"][0]["rank"] == 6
    created = client.post("/api/v1/models/coupon/segments", json={"top_percent": 10}, headers=token)
    assert created.status_code == 201, created.json
    assert created.json["definition"]["rule"] == {
        "type": "propensity",
        "model": "coupon",
        "top_percent": 10,
    }
    again = client.post("/api/v1/models/coupon/versions/1/activate", headers=token)
    assert again.status_code == 200 and again.json["active"]
    assert (
        client.post("/api/v1/models/coupon/versions/7/activate", headers=token).status_code == 404
    )


def test_roles(app, client, world):
    marketer = bearer(issue_token(app, make_user(app, "marketer", "m@test.cn")))
    assert client.get("/api/v1/models", headers=marketer).status_code == 200
    assert client.post("/api/v1/models/coupon/score", headers=marketer).status_code == 403
    reviewer = bearer(issue_token(app, make_user(app, "reviewer", "r@test.cn")))
    assert client.get("/api/v1/models", headers=reviewer).status_code == 403
    analyst = bearer(issue_token(app, make_user(app, "analyst", "a@test.cn")))
    assert client.post("/api/v1/models/coupon/score", headers=analyst).status_code == 202
    assert client.get("/api/v1/models").status_code == 401


def test_openapi_documents_the_models_api(client):
    paths = client.get("/api/openapi.json").json["paths"]
    assert {"/api/v1/models", "/api/v1/models/train", "/api/v1/models/{name}/segments"} <= set(
        paths
    )
