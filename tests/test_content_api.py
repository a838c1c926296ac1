"""/api/v1/content end to end: create, edit, submit, approve (never your own), preview."""

from __future__ import annotations

import sqlalchemy as sa

from cdp.actors import SYSTEM
from cdp.db import db
from cdp.ingest.pipeline import ingest
from cdp.models import AuditEntry
from cdp.sources import create_source
from tests.conftest import make_user
from tests.test_api import bearer, issue_token
from tests.test_content import EXPIRES

SMS = {
    "name": "续方提醒",
    "kind": "sms",
    "body": {"text": "【康护】{{ profile.name }}您好，您的{{ context.drug }}快用完了。"},
    "audience": "patient",
    "product_class": "non_drug",
    "category": "service",
    "expires_on": EXPIRES,
}


def tokens(app) -> dict[str, dict]:
    return {
        role: bearer(issue_token(app, make_user(app, role, f"{role}@test.cn")))
        for role in ("marketer", "reviewer", "admin", "analyst")
    }


def test_the_review_workflow_over_the_api(app, client):
    t = tokens(app)
    created = client.post("/api/v1/content", json=SMS, headers=t["marketer"])
    assert created.status_code == 201, created.json
    item = created.json["id"]
    assert created.json["latest"]["variables"] == ["context.drug", "profile.name"]
    base = f"/api/v1/content/{item}/versions/1"
    patched = client.patch(base, json={"therapeutic_area": "糖尿病"}, headers=t["marketer"])
    assert patched.status_code == 200 and patched.json["therapeutic_area"] == "糖尿病"
    assert client.post(f"{base}/submit", json={}, headers=t["marketer"]).status_code == 200
    queue = client.get("/api/v1/content/review-queue", headers=t["reviewer"]).json
    assert [q["version"]["number"] for q in queue] == [1]
    assert client.post(f"{base}/approve", json={}, headers=t["marketer"]).status_code == 403
    no_code = client.post(f"{base}/approve", json={}, headers=t["reviewer"])
    assert no_code.status_code == 422 and "approval_code" in no_code.json["errors"]
    ok = client.post(f"{base}/approve", json={"approval_code": "MLR-9"}, headers=t["reviewer"])
    assert ok.status_code == 200 and ok.json["status"] == "approved"
    assert [h["to_status"] for h in ok.json["history"]] == [
        "approved",
        "submitted",
        "draft",
        "draft",
    ]
    frozen = client.patch(base, json={"therapeutic_area": "x"}, headers=t["marketer"])
    assert frozen.status_code == 409
    v2 = client.post(f"/api/v1/content/{item}/versions", json={}, headers=t["marketer"])
    assert v2.status_code == 201 and v2.json["number"] == 2 and v2.json["status"] == "draft"
    listed = client.get("/api/v1/content?status=approved", headers=t["analyst"])
    assert listed.status_code == 403  # analysts do not see content
    listed = client.get("/api/v1/content?status=approved", headers=t["reviewer"]).json
    assert [i["id"] for i in listed["items"]] == [item]
    detail = client.get(f"/api/v1/content/{item}", headers=t["marketer"]).json
    assert [v["number"] for v in detail["versions"]] == [2, 1]
    withdrawn = client.post(f"{base}/withdraw", json={"comment": "label"}, headers=t["reviewer"])
    assert withdrawn.json["status"] == "withdrawn"


def test_admin_cannot_approve_what_they_wrote(app, client):
    t = tokens(app)
    item = client.post("/api/v1/content", json=SMS, headers=t["admin"]).json["id"]
    base = f"/api/v1/content/{item}/versions/1"
    client.post(f"{base}/submit", json={}, headers=t["admin"])
    response = client.post(f"{base}/approve", json={"approval_code": "M"}, headers=t["admin"])
    assert response.status_code == 403
    assert "wrote" in response.json["message"]


def test_bad_content_is_refused_with_the_field_named(app, client):
    t = tokens(app)
    bad = {**SMS, "product_class": "rx", "products": ["恩格列净"]}
    item = client.post("/api/v1/content", json=bad, headers=t["marketer"]).json["id"]
    response = client.post(
        f"/api/v1/content/{item}/versions/1/submit", json={}, headers=t["marketer"]
    )
    assert response.status_code == 422 and "audience" in response.json["errors"]
    unknown = client.post("/api/v1/content", json={**SMS, "kind": "fax"}, headers=t["marketer"])
    assert unknown.status_code == 422


def test_preview_as_a_profile_renders_and_audits_the_personal_data_used(app, client):
    t = tokens(app)
    with app.app_context():
        source = create_source(SYSTEM, "s", "http")[0]
        result = ingest(source, [{"type": "identify", "userId": "u", "traits": {"name": "孙丽"}}])
        profile_id = result.profile_ids[0]
    item = client.post("/api/v1/content", json=SMS, headers=t["marketer"]).json["id"]
    response = client.post(
        f"/api/v1/content/{item}/preview",
        json={"profile_id": profile_id, "context": {"drug": "格华止"}},
        headers=t["reviewer"],
    )
    assert response.status_code == 200, response.json
    body = response.json
    assert body["message"]["text"] == "【康护】孙丽您好，您的格华止快用完了。"
    assert body["pii_fields"] == ["name"]
    assert {b["reason"] for b in body["blocked"]} == {"not_approved"}
    missing = client.post(
        f"/api/v1/content/{item}/preview", json={"profile_id": profile_id}, headers=t["reviewer"]
    ).json
    assert missing["message"] is None and "context.drug" in missing["problems"][0]
    with app.app_context():
        rows = db.session.scalars(
            sa.select(AuditEntry).where(AuditEntry.action == "content.preview")
        ).all()
        assert len(rows) == 2 and rows[0].details == {
            "profile_id": profile_id,
            "pii_fields": ["name"],
        }
