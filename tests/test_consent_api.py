"""GET/POST /api/v1/profiles/{id}/consents: history and current state, by role."""

from __future__ import annotations

from cdp.actors import SYSTEM
from cdp.ingest.pipeline import ingest
from cdp.ingest.tasks import process_batch
from cdp.sources import create_source
from tests.conftest import make_user
from tests.test_api import bearer, issue_token


def person(app) -> int:
    with app.app_context():
        source = create_source(SYSTEM, "s", "http")[0]
        result = ingest(
            source,
            [
                {
                    "type": "identify",
                    "userId": "u",
                    "messageId": "m1",
                    "traits": {"consents": {"sms": True}},
                }
            ],
        )
        process_batch(result.outbox_id)
        return result.profile_ids[0]


def test_consents_history_and_current(app, client):
    pid = person(app)
    admin = bearer(issue_token(app, make_user(app, "admin")))
    marketer = bearer(issue_token(app, make_user(app, "marketer", "m@test.cn")))
    got = client.get(f"/api/v1/profiles/{pid}/consents", headers=marketer)
    assert got.status_code == 200
    assert got.json["current"] == [
        {
            "purpose": "marketing",
            "channel": "sms",
            "status": "granted",
            "updated_at": got.json["current"][0]["updated_at"],
        }
    ]
    assert got.json["history"][0]["evidence"]["message_id"] == "m1"
    body = {
        "purpose": "marketing",
        "channel": "sms",
        "status": "withdrawn",
        "evidence": {"form": "call-centre", "ticket": "T-88"},
    }
    assert (
        client.post(f"/api/v1/profiles/{pid}/consents", json=body, headers=marketer).status_code
        == 403
    )
    created = client.post(f"/api/v1/profiles/{pid}/consents", json=body, headers=admin)
    assert created.status_code == 201 and created.json["status"] == "withdrawn"
    current = client.get(f"/api/v1/profiles/{pid}/consents", headers=admin).json
    assert current["current"][0]["status"] == "withdrawn" and len(current["history"]) == 2
    guardian = {"purpose": "guardian", "status": "granted"}
    assert (
        client.post(f"/api/v1/profiles/{pid}/consents", json=guardian, headers=admin).status_code
        == 201
    )


def test_bad_consents_are_422_and_unknown_profiles_404(app, client):
    pid = person(app)
    admin = bearer(issue_token(app, make_user(app, "admin")))
    bad = client.post(
        f"/api/v1/profiles/{pid}/consents",
        json={"purpose": "lottery", "status": "maybe"},
        headers=admin,
    )
    assert bad.status_code == 422 and set(bad.json["errors"]["json"]) == {"purpose", "status"}
    future = client.post(
        f"/api/v1/profiles/{pid}/consents",
        json={"purpose": "marketing", "status": "granted", "at": "2999-01-01T00:00:00+08:00"},
        headers=admin,
    )
    assert future.status_code == 422
    assert client.get("/api/v1/profiles/999/consents", headers=admin).status_code == 404
    reviewer = bearer(issue_token(app, make_user(app, "reviewer", "r@test.cn")))
    assert client.get(f"/api/v1/profiles/{pid}/consents", headers=reviewer).status_code == 403
