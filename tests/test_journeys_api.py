"""/api/v1/journeys and /api/v1/deliveries: status codes, 422 with every problem, 404s, 403s,
and every endpoint in the OpenAPI document."""

from __future__ import annotations

import pytest

from cdp.db import db, utcnow
from cdp.models import Profile
from journeys.models import Delivery, JourneyInstance
from tests.conftest import make_user
from tests.test_api import bearer, issue_token
from tests.test_journeys_validation import World, refill, step


@pytest.fixture
def world(app_ctx):
    return World(app_ctx)


@pytest.fixture
def marketer(app, world):
    return bearer(issue_token(app, world.team.marketer.user_id))


@pytest.fixture
def reviewer(app, world):
    return bearer(issue_token(app, world.team.reviewer.user_id))


def create(client, headers, definition, name="续方提醒"):
    response = client.post(
        "/api/v1/journeys", json={"name": name, "definition": definition}, headers=headers
    )
    assert response.status_code == 201, response.json
    return response.json


def test_create_read_update_list(client, world, marketer):
    body = create(client, marketer, {"start": "half-written"})
    assert (body["status"], body["live_version"], body["definition"]) == (
        "draft",
        None,
        {"start": "half-written"},
    )
    path = f"/api/v1/journeys/{body['id']}"
    assert client.get(path, headers=marketer).json["name"] == "续方提醒"
    patched = client.patch(path, json={"definition": refill(world)}, headers=marketer)
    assert patched.status_code == 200 and patched.json["definition"] == refill(world)
    listed = client.get("/api/v1/journeys?status=draft", headers=marketer).json
    assert [j["id"] for j in listed] == [body["id"]]
    assert client.get("/api/v1/journeys?status=published", headers=marketer).json == []


def test_bad_input_names_the_field(client, marketer):
    missing = client.post("/api/v1/journeys", json={"name": "x"}, headers=marketer)
    assert missing.status_code == 422 and "definition" in missing.json["errors"]["json"]
    blank = client.post("/api/v1/journeys", json={"name": "", "definition": {}}, headers=marketer)
    assert blank.status_code == 422 and "name" in blank.json["errors"]["json"]
    listed = client.get("/api/v1/journeys?status=live", headers=marketer)
    assert listed.status_code == 422 and "status" in listed.json["errors"]["query"]
    not_object = client.patch(
        f"/api/v1/journeys/{create(client, marketer, {})['id']}",
        json={"definition": [1]},
        headers=marketer,
    )
    assert not_object.status_code == 422


def test_unknown_ids_are_404(client, marketer):
    for method, path in (
        ("GET", "/api/v1/journeys/999"),
        ("PATCH", "/api/v1/journeys/999"),
        ("POST", "/api/v1/journeys/999/publish"),
        ("POST", "/api/v1/journeys/999/pause"),
        ("POST", "/api/v1/journeys/999/archive"),
        ("GET", "/api/v1/journeys/999/versions"),
        ("GET", "/api/v1/journeys/999/versions/1"),
        ("GET", "/api/v1/journeys/999/stats"),
        ("POST", "/api/v1/journeys/999/dry-run"),
    ):
        response = client.open(path, method=method, json={}, headers=marketer)
        assert response.status_code == 404, (method, path, response.status_code)
    huge = 10**30  # beyond any database integer: still a plain 404 or problem, never a 500
    assert client.get(f"/api/v1/journeys/{huge}", headers=marketer).status_code == 404
    assert client.get(f"/api/v1/deliveries?profile_id={huge}", headers=marketer).status_code == 422
    definition = {
        "audience": {"kind": "patient", "segment_id": huge},
        "trigger": {"type": "event", "event": "x"},
        "start": "a",
        "steps": [
            {"id": "a", "type": "send", "channel": "sms", "content_id": huge, "next": "b"},
            {"id": "b", "type": "issue_coupon", "campaign_id": huge, "next": "c"},
            {"id": "c", "type": "branch", "condition": {"type": "segment", "segment_id": huge},
             "then": "d", "else": "d"},
            {"id": "d", "type": "exit"},
        ],
    }  # fmt: skip
    checked = client.post("/api/v1/journeys/validate", json=definition, headers=marketer)
    assert checked.status_code == 200
    assert {p["code"] for p in checked.json["problems"]} == {
        "unknown_segment",
        "unknown_content",
        "unknown_campaign",
    }


def test_validate_returns_every_problem_without_saving(client, world, marketer):
    ok = client.post("/api/v1/journeys/validate", json=refill(world), headers=marketer)
    assert ok.status_code == 200 and ok.json == {"valid": True, "problems": []}
    bad = refill(world)
    bad["start"] = "nope"
    step(bad, "tell")["content_id"] = 9999
    response = client.post("/api/v1/journeys/validate", json=bad, headers=marketer)
    assert response.status_code == 200 and response.json["valid"] is False
    assert {(p["path"], p["code"]) for p in response.json["problems"]} >= {
        ("/start", "unknown_step"),
        ("/steps/5/content_id", "unknown_content"),
    }
    assert all(set(p) == {"path", "code", "message"} for p in response.json["problems"])
    schema = client.get("/api/v1/journeys/schema", headers=marketer).json
    assert schema["title"] == "CarePath journey definition"


def test_publishing_an_invalid_journey_is_422_with_all_problems(client, world, marketer):
    bad = refill(world)
    bad["start"] = "nope"
    step(bad, "coupon")["campaign_id"] = 777
    journey = create(client, marketer, bad)
    response = client.post(f"/api/v1/journeys/{journey['id']}/publish", headers=marketer)
    assert response.status_code == 422
    assert {(p["path"], p["code"]) for p in response.json["problems"]} >= {
        ("/start", "unknown_step"),
        ("/steps/4/campaign_id", "unknown_campaign"),
    }
    assert response.json["errors"]["definition/start"] == ["no step 'nope'"]
    versions = client.get(f"/api/v1/journeys/{journey['id']}/versions", headers=marketer)
    assert versions.json == []


def test_publish_lifecycle_versions_and_conflicts(client, world, marketer):
    journey = create(client, marketer, refill(world))
    base = f"/api/v1/journeys/{journey['id']}"
    assert client.post(f"{base}/pause", headers=marketer).status_code == 409
    first = client.post(f"{base}/publish", json={"note": "first"}, headers=marketer)
    assert first.status_code == 201
    assert (first.json["number"], first.json["note"]) == (1, "first")
    assert step(first.json["definition"], "remind")["content_version_id"]
    changed = refill(world)
    step(changed, "wait_buy")["timeout"] = "3d"
    client.patch(base, json={"definition": changed}, headers=marketer)
    assert (
        client.get(f"{base}/versions/1", headers=marketer).json["definition"]
        == (first.json["definition"])
    )
    second = client.post(f"{base}/publish", json={}, headers=marketer)
    assert second.status_code == 201 and second.json["number"] == 2
    assert [v["number"] for v in client.get(f"{base}/versions", headers=marketer).json] == [2, 1]
    assert client.get(f"{base}/versions/3", headers=marketer).status_code == 404
    assert client.post(f"{base}/pause", headers=marketer).json["status"] == "paused"
    assert client.post(f"{base}/pause", headers=marketer).status_code == 409
    assert client.post(f"{base}/resume", headers=marketer).json["status"] == "published"
    assert client.post(f"{base}/archive", headers=marketer).json["status"] == "archived"
    refused = client.patch(base, json={"name": "again"}, headers=marketer)
    assert refused.status_code == 409 and refused.json["errors"] == {
        "status": ["an archived journey cannot be changed"]
    }


def test_publish_with_a_migration_that_strands_people_is_refused(client, world, marketer):
    journey = create(client, marketer, refill(world))
    base = f"/api/v1/journeys/{journey['id']}"
    version = client.post(f"{base}/publish", headers=marketer).json
    profile = Profile(kind="patient")
    db.session.add(profile)
    db.session.commit()
    db.session.add(
        JourneyInstance(
            journey_id=journey["id"],
            version_id=version["id"],
            profile_id=profile.id,
            step_id="wait_buy",
            state="waiting",
        )
    )
    db.session.commit()
    renamed = refill(world)
    renamed["steps"][2]["id"] = "wait_refill"
    step(renamed, "remind")["next"] = "wait_refill"
    client.patch(base, json={"definition": renamed}, headers=marketer)
    refused = client.post(f"{base}/publish", json={"migrate": {}}, headers=marketer)
    assert refused.status_code == 422 and "migrate" in refused.json["errors"]
    bad_map = client.post(f"{base}/publish", json={"migrate": {"a": 1}}, headers=marketer)
    assert bad_map.status_code == 422
    moved = client.post(
        f"{base}/publish", json={"migrate": {"wait_buy": "wait_refill"}}, headers=marketer
    )
    assert moved.status_code == 201 and moved.json["number"] == 2


def test_reviewers_read_but_may_not_publish_or_edit(client, world, marketer, reviewer):
    journey = create(client, marketer, refill(world))
    base = f"/api/v1/journeys/{journey['id']}"
    assert client.get(base, headers=reviewer).status_code == 200
    assert client.get(f"{base}/stats", headers=reviewer).status_code == 200
    for path in ("publish", "pause", "archive", "dry-run", "test-mode"):
        assert client.post(f"{base}/{path}", json={}, headers=reviewer).status_code == 403
    assert client.patch(base, json={"name": "x"}, headers=reviewer).status_code == 403
    assert client.get("/api/v1/deliveries", headers=reviewer).status_code == 403
    assert client.post(f"{base}/publish", headers=marketer).status_code == 201


def test_stats_test_mode_and_dry_run(client, world, marketer):
    journey = create(client, marketer, refill(world))
    base = f"/api/v1/journeys/{journey['id']}"
    stats = client.get(f"{base}/stats", headers=marketer).json
    assert stats["totals"]["entered"] == 0 and set(stats["steps"]) == {
        s["id"] for s in refill(world)["steps"]
    }
    assert client.get(f"{base}/stats?version=1", headers=marketer).status_code == 404
    profile = Profile(kind="patient")
    db.session.add(profile)
    db.session.commit()
    bad = client.post(
        f"{base}/test-mode", json={"enabled": True, "profile_ids": [999]}, headers=marketer
    )
    assert bad.status_code == 422 and "profile_ids" in bad.json["errors"]
    on = client.post(
        f"{base}/test-mode", json={"enabled": True, "profile_ids": [profile.id]}, headers=marketer
    )
    assert on.status_code == 200 and on.json["test_mode"] is True
    dry = client.post(f"{base}/dry-run", json={"limit": 5}, headers=marketer)
    assert dry.status_code == 200
    assert (dry.json["count"], dry.json["sample"], dry.json["test_mode"]) == (0, [], True)
    unreadable = client.post(f"{base}/dry-run", json={"definition": {"x": 1}}, headers=marketer)
    assert unreadable.status_code == 422 and unreadable.json["problems"]


def test_the_outbox_lists_deliveries_newest_first_in_pages(app, client, world, marketer):
    journey = create(client, marketer, refill(world))
    profile = Profile(kind="patient")
    db.session.add(profile)
    db.session.commit()
    for n, status in enumerate(["sent", "skipped", "skipped", "deferred"]):
        db.session.add(
            Delivery(
                key=f"k{n}",
                journey_id=journey["id"],
                step_id="remind",
                profile_id=profile.id,
                action="send",
                channel="wechat",
                status=status,
                reason="no_marketing_consent" if status == "skipped" else None,
                payload={"data": {"name": "王芳"}},
                created_at=utcnow(),
            )
        )
    db.session.commit()
    first = client.get(f"/api/v1/deliveries?profile_id={profile.id}&limit=3", headers=marketer)
    assert first.status_code == 200
    assert [d["status"] for d in first.json["items"]] == ["deferred", "skipped", "skipped"]
    assert "payload" not in first.json["items"][0]  # rendered messages may hold personal data
    rest = client.get(
        f"/api/v1/deliveries?limit=3&cursor={first.json['next_cursor']}", headers=marketer
    )
    assert [d["status"] for d in rest.json["items"]] == ["sent"]
    assert rest.json["next_cursor"] is None
    skipped = client.get("/api/v1/deliveries?status=skipped", headers=marketer).json["items"]
    assert {d["reason"] for d in skipped} == {"no_marketing_consent"}
    assert client.get("/api/v1/deliveries?status=lost", headers=marketer).status_code == 422
    analyst = bearer(issue_token(app, make_user(app, "analyst")))
    assert client.get("/api/v1/deliveries", headers=analyst).status_code == 200


def test_openapi_lists_every_journey_endpoint(client):
    paths = client.get("/api/openapi.json").json["paths"]
    for path in (
        "/api/v1/journeys",
        "/api/v1/journeys/schema",
        "/api/v1/journeys/validate",
        "/api/v1/journeys/{journey_id}",
        "/api/v1/journeys/{journey_id}/publish",
        "/api/v1/journeys/{journey_id}/pause",
        "/api/v1/journeys/{journey_id}/resume",
        "/api/v1/journeys/{journey_id}/archive",
        "/api/v1/journeys/{journey_id}/versions",
        "/api/v1/journeys/{journey_id}/versions/{number}",
        "/api/v1/journeys/{journey_id}/stats",
        "/api/v1/journeys/{journey_id}/test-mode",
        "/api/v1/journeys/{journey_id}/dry-run",
        "/api/v1/deliveries",
    ):
        assert path in paths, path
    publish = paths["/api/v1/journeys/{journey_id}/publish"]["post"]
    assert "422" in publish["responses"]
