"""/api/v1/privacy: export (JSON and zip), erasure as a job with status, retention rules."""

from __future__ import annotations

import io
import zipfile

from cdp.actors import SYSTEM
from cdp.ingest.pipeline import ingest
from cdp.privacy.erasure import run_erasure
from cdp.sources import create_source
from tests.conftest import make_user
from tests.test_api import bearer, issue_token


def person(app) -> int:
    with app.app_context():
        source = create_source(SYSTEM, "s", "http")[0]
        result = ingest(
            source, [{"type": "identify", "userId": "u-9", "traits": {"name": "钱多多"}}]
        )
        return result.profile_ids[0]


def test_export_erase_and_request_status(app, client):
    pid = person(app)
    admin = bearer(issue_token(app, make_user(app, "admin")))
    data = client.post("/api/v1/privacy/exports", json={"profile_id": pid}, headers=admin)
    assert data.status_code == 200 and data.mimetype == "application/json"
    assert data.json["profiles"][0]["personal_data"]["name"] == "钱多多"
    assert "attachment" in data.headers["Content-Disposition"]
    archive = client.post(
        "/api/v1/privacy/exports", json={"profile_id": pid, "format": "zip"}, headers=admin
    )
    assert "identifiers.csv" in zipfile.ZipFile(io.BytesIO(archive.data)).namelist()
    refused = client.post(
        "/api/v1/privacy/erasures", json={"profile_id": pid, "confirm": False}, headers=admin
    )
    assert refused.status_code == 422
    queued = client.post(
        "/api/v1/privacy/erasures", json={"profile_id": pid, "confirm": True}, headers=admin
    )
    assert queued.status_code == 202 and queued.json["status"] == "queued"
    with app.app_context():
        run_erasure(queued.json["id"])
    done = client.get(f"/api/v1/privacy/requests/{queued.json['id']}", headers=admin).json
    assert done["status"] == "completed" and done["result"]["rows"]["profiles"] == 1
    listed = client.get("/api/v1/privacy/requests", headers=admin).json
    assert [r["kind"] for r in listed] == ["erasure", "export", "export"]
    assert (
        client.post("/api/v1/privacy/exports", json={"profile_id": pid}, headers=admin).status_code
        == 404
    )


def test_retention_rules_and_roles(app, client):
    admin = bearer(issue_token(app, make_user(app, "admin")))
    marketer = bearer(issue_token(app, make_user(app, "marketer", "m@test.cn")))
    assert (
        client.put(
            "/api/v1/privacy/retention/page_view", json={"days": 90}, headers=admin
        ).status_code
        == 200
    )
    assert (
        client.put("/api/v1/privacy/retention/*", json={"days": 730}, headers=admin).json["days"]
        == 730
    )
    assert (
        client.put("/api/v1/privacy/retention/x", json={"days": 0}, headers=admin).status_code
        == 422
    )
    rules = client.get("/api/v1/privacy/retention", headers=admin).json
    assert [(r["event_name"], r["days"]) for r in rules] == [("*", 730), ("page_view", 90)]
    assert client.delete("/api/v1/privacy/retention/page_view", headers=admin).status_code == 204
    assert client.delete("/api/v1/privacy/retention/page_view", headers=admin).status_code == 404
    assert client.get("/api/v1/privacy/retention", headers=marketer).status_code == 403
    assert (
        client.post("/api/v1/privacy/exports", json={"profile_id": 1}, headers=marketer).status_code
        == 403
    )
