"""/api/v1/segments: CRUD, validation errors by path, preview, members, export, history."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
import sqlalchemy as sa

from cdp.actors import SYSTEM
from cdp.consent import record_consent
from cdp.db import db, utcnow
from cdp.models import AuditEntry, JobRun
from segments import tasks
from segments.models import Segment
from tests.conftest import make_user
from tests.test_api import bearer, issue_token
from tests.test_segments_membership import person, pid, send

SHANGHAI = {"rule": {"type": "trait", "trait": "city", "op": "equals", "value": "上海"}}


@pytest.fixture
def token(app, admin):
    return bearer(issue_token(app, admin))


@pytest.fixture
def people(app_ctx):
    from cdp.sources import create_source

    source, _ = create_source(SYSTEM, "CRM", "http")
    send(source.id, *person("a", "上海", reads=2), *person("b", "上海"), *person("c", "北京"))
    return {user: pid(user) for user in "abc"}


def refresh_all() -> None:
    job = tasks.create_refresh_job(SYSTEM)
    tasks.run_refresh(job.id, list(job.params["segment_ids"]))


def test_create_list_read_update_archive(client, token, people):
    created = client.post(
        "/api/v1/segments",
        json={"name": "上海患者", "definition": SHANGHAI, "description": "城市"},
        headers=token,
    )
    assert created.status_code == 201, created.json
    body = created.json
    assert (body["version"], body["status"], body["health_data"]) == (1, "active", False)
    assert body["depends_on"] == ["merge", "new_profile", "profile"]
    # Creating starts a refresh job (a worker computes the members).
    job = db.session.scalar(sa.select(JobRun).where(JobRun.kind == "segments-refresh"))
    assert job.params["segment_ids"] == [body["id"]] and job.status == "queued"
    refresh_all()
    listed = client.get("/api/v1/segments", headers=token).json
    assert [(s["name"], s["size"]) for s in listed] == [("上海患者", 2)]

    sid = body["id"]
    changed = client.patch(
        f"/api/v1/segments/{sid}",
        json={"definition": {"rule": {"type": "trait", "trait": "city", "op": "exists"}}},
        headers=token,
    )
    assert changed.status_code == 200, changed.json
    assert changed.json["version"] == 2
    renamed = client.patch(f"/api/v1/segments/{sid}", json={"name": "有城市"}, headers=token)
    assert (renamed.json["name"], renamed.json["version"]) == ("有城市", 2)
    archived = client.delete(f"/api/v1/segments/{sid}", headers=token)
    assert archived.json["status"] == "archived"
    assert client.get("/api/v1/segments", headers=token).json == []
    assert client.get(f"/api/v1/segments/{sid}", headers=token).json["status"] == "archived"
    actions = db.session.scalars(
        sa.select(AuditEntry.action).where(AuditEntry.object_type == "segment")
    ).all()
    assert actions == ["segment.create", "segment.update", "segment.update", "segment.archive"]


def test_invalid_definitions_name_the_path_and_the_problem(client, token, app_ctx):
    bad = {
        "rule": {
            "and": [
                {"type": "trait", "trait": "city", "op": "in", "value": "上海"},
                {"type": "event_count", "event": "pos_purchase", "op": "gte"},
                {"type": "coupon", "campaign_id": 1, "state": "lost"},
                {"type": "segment", "segment_id": 999},
            ]
        }
    }
    response = client.post(
        "/api/v1/segments", json={"name": "坏的", "definition": bad}, headers=token
    )
    assert response.status_code == 422
    errors = response.json["errors"]
    assert errors["/definition/rule/and/0/value"] == ["'上海' is not of type 'array'"]
    assert errors["/definition/rule/and/1"] == ["'value' is required"]
    assert "'lost' is not one of" in errors["/definition/rule/and/2/state"][0]
    assert errors["/definition/rule/and/3/segment_id"] == ["segment 999 does not exist"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Segment)) == 0
    preview = client.post("/api/v1/segments/preview", json={"definition": bad}, headers=token)
    assert preview.status_code == 422 and "/definition/rule/and/0/value" in preview.json["errors"]
    missing = client.post("/api/v1/segments", json={"name": "x"}, headers=token)
    assert missing.status_code == 422 and "definition" in missing.json["errors"]["json"]


def test_cycles_are_refused(client, token, app_ctx):
    first = client.post(
        "/api/v1/segments", json={"name": "A", "definition": SHANGHAI}, headers=token
    ).json
    second = client.post(
        "/api/v1/segments",
        json={"name": "B", "definition": {"rule": {"type": "segment", "segment_id": first["id"]}}},
        headers=token,
    ).json
    cycle = {"rule": {"not": {"type": "segment", "segment_id": second["id"]}}}
    response = client.patch(
        f"/api/v1/segments/{first['id']}", json={"definition": cycle}, headers=token
    )
    assert response.status_code == 422
    assert "cycle" in response.json["errors"]["/definition/rule"][0]
    myself = {"rule": {"type": "segment", "segment_id": first["id"]}}
    response = client.patch(
        f"/api/v1/segments/{first['id']}", json={"definition": myself}, headers=token
    )
    assert response.status_code == 422


def test_preview_counts_and_samples_without_saving_or_personal_data(client, token, people):
    response = client.post("/api/v1/segments/preview", json={"definition": SHANGHAI}, headers=token)
    assert response.status_code == 200
    body = response.json
    assert body["count"] == 2 and body["health_data"] is False and body["notice"] is None
    assert sorted(p["profile_id"] for p in body["sample"]) == sorted([people["a"], people["b"]])
    assert set(body["sample"][0]) <= {
        "profile_id", "kind", "city", "city_tier", "preferred_channel", "first_seen_at",
        "last_seen_at", "entered_at",
    }  # fmt: skip
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Segment)) == 0
    health = {"rule": {"type": "event_count", "event": "pos_purchase", "op": "gte", "value": 0}}
    body = client.post("/api/v1/segments/preview", json={"definition": health}, headers=token).json
    assert body["health_data"] is True and "PIPL" in body["notice"] and body["count"] == 0
    record_consent(SYSTEM, people["c"], "health_data", "*", "granted")
    db.session.commit()
    body = client.post("/api/v1/segments/preview", json={"definition": health}, headers=token).json
    assert [p["profile_id"] for p in body["sample"]] == [people["c"]]


def test_members_are_cursor_paged(client, token, people):
    sid = client.post(
        "/api/v1/segments",
        json={"name": "全部", "definition": {"rule": {"and": []}}},
        headers=token,
    ).json["id"]
    refresh_all()
    first = client.get(f"/api/v1/segments/{sid}/members?limit=2", headers=token).json
    assert [m["profile_id"] for m in first["items"]] == sorted(people.values())[:2]
    assert first["items"][0]["entered_at"] is not None
    second = client.get(
        f"/api/v1/segments/{sid}/members?limit=2&cursor={first['next_cursor']}", headers=token
    ).json
    assert [m["profile_id"] for m in second["items"]] == sorted(people.values())[2:]
    assert second["next_cursor"] is None
    assert client.get(f"/api/v1/segments/{sid}/members?cursor=x", headers=token).status_code == 422


def test_export_is_csv_of_ids_and_audited(app, client, token, people):
    sid = client.post(
        "/api/v1/segments", json={"name": "上海", "definition": SHANGHAI}, headers=token
    ).json["id"]
    refresh_all()
    response = client.get(f"/api/v1/segments/{sid}/export.csv", headers=token)
    assert response.status_code == 200 and response.mimetype == "text/csv"
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True).lstrip("\ufeff"))))
    assert rows[0] == ["profile_id", "kind", "city", "city_tier", "preferred_channel", "entered_at"]
    assert sorted(int(r[0]) for r in rows[1:]) == sorted([people["a"], people["b"]])
    assert {r[2] for r in rows[1:]} == {"上海"}
    entry = db.session.scalar(sa.select(AuditEntry).where(AuditEntry.action == "segment.export"))
    assert entry.object_id == str(sid) and entry.details == {"members": 2}
    reviewer = bearer(issue_token(app, make_user(app, "reviewer")))
    assert client.get(f"/api/v1/segments/{sid}/export.csv", headers=reviewer).status_code == 403
    analyst = bearer(issue_token(app, make_user(app, "analyst")))
    assert client.get(f"/api/v1/segments/{sid}/export.csv", headers=analyst).status_code == 200


def test_history_overlap_and_refresh(client, token, people):
    one = client.post(
        "/api/v1/segments", json={"name": "上海", "definition": SHANGHAI}, headers=token
    ).json["id"]
    two = client.post(
        "/api/v1/segments",
        json={"name": "全部", "definition": {"rule": {"and": []}}},
        headers=token,
    ).json["id"]
    refresh_all()
    history = client.get(f"/api/v1/segments/{one}/history?days=7", headers=token).json
    assert len(history["items"]) == 7 and history["items"][-1]["size"] == 2
    at = (utcnow() - timedelta(days=2)).isoformat()
    past = client.get(
        f"/api/v1/segments/{one}/history", query_string={"at": at}, headers=token
    ).json
    assert past["size_at"] == 0
    overlap = client.get(f"/api/v1/segments/overlap?a={one}&b={two}", headers=token).json
    assert overlap == {"a": 2, "b": 3, "both": 2, "only_a": 0, "only_b": 1}
    started = client.post(f"/api/v1/segments/{one}/refresh", headers=token)
    assert started.status_code == 202 and started.json["status"] == "queued"


def test_roles_and_tokens(app, client, people):
    assert client.get("/api/v1/segments").status_code == 401
    reviewer = bearer(issue_token(app, make_user(app, "reviewer")))
    assert client.get("/api/v1/segments", headers=reviewer).status_code == 403
    marketer = bearer(issue_token(app, make_user(app, "marketer")))
    created = client.post(
        "/api/v1/segments", json={"name": "m", "definition": SHANGHAI}, headers=marketer
    )
    assert created.status_code == 201


def test_schema_and_openapi_are_published(client, token):
    schema = client.get("/api/v1/segments/schema", headers=token).json
    assert schema["$id"].endswith("segment.schema.json")
    assert "refill_lapse" in schema["$defs"]
    spec = client.get("/api/openapi.json").json
    for path in (
        "/api/v1/segments",
        "/api/v1/segments/preview",
        "/api/v1/segments/{segment_id}/members",
        "/api/v1/segments/{segment_id}/export.csv",
        "/api/v1/segments/{segment_id}/history",
    ):
        assert path in spec["paths"], path
