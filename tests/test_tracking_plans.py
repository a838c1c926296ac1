"""Tracking plans set through the API and the CLI, then enforced by the tracking API."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from cdp.db import db
from cdp.models import AuditEntry, Violation
from cdp.sources import forget_write_keys
from tests.conftest import csrf_token_from, make_user
from tests.test_api import bearer, issue_token
from tests.test_segment_api import events, new_source, post

PLAN = {
    "mode": "block",
    "events": {
        "Order Completed": {
            "type": "object",
            "required": ["order_id"],
            "properties": {"order_id": {"type": "string"}},
        }
    },
}


@pytest.fixture
def token(app, admin) -> dict:
    return bearer(issue_token(app, admin))


def plan_url(source_id: str) -> str:
    return f"/api/v1/sources/{source_id}/tracking-plan"


def test_a_block_plan_set_by_api_rejects_unplanned_and_bad_events(app, client, token):
    source = new_source(app)
    assert client.get(plan_url(source.id), headers=token).get_json() == {"plan": None}
    response = client.put(plan_url(source.id), json={"plan": PLAN}, headers=token)
    assert response.status_code == 200 and response.get_json() == {"plan": PLAN}
    forget_write_keys()  # another process would see the plan within seconds
    batch = [
        {
            "type": "track",
            "userId": "u",
            "event": "Order Completed",
            "properties": {"order_id": "1"},
        },
        {"type": "track", "userId": "u", "event": "Order Completed", "properties": {"order_id": 1}},
        {"type": "track", "userId": "u", "event": "Surprise"},
        {"type": "identify", "userId": "u", "traits": {"tier": 1}},  # only track is planned
    ]
    body = post(client, "/v1/batch", {"batch": batch}, source.write_key).get_json()
    assert body["accepted"] == 2
    assert [(r["index"], r["field"]) for r in body["rejected"]] == [
        (1, "properties.order_id"),
        (2, "event"),
    ]
    assert [e.name for e in events(app, source_id=source.id, type="track")] == ["Order Completed"]
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count(Violation.id))) == 2
        entry = db.session.scalar(
            sa.select(AuditEntry).where(AuditEntry.action == "source.tracking_plan")
        )
        assert entry.object_id == source.id and entry.details["mode"] == "block"


def test_flag_mode_stores_the_event_and_lists_the_violation(app, client, token):
    source = new_source(app)
    client.put(plan_url(source.id), json={"plan": {**PLAN, "mode": "flag"}}, headers=token)
    forget_write_keys()
    body = post(
        client, "/v1/track", {"userId": "u", "event": "Surprise"}, source.write_key
    ).get_json()
    assert body["accepted"] == 1 and body["flagged"] == 1
    with app.app_context():
        violation = db.session.scalar(sa.select(Violation))
        assert (violation.field, violation.rejected) == ("event", False)


@pytest.mark.parametrize(
    "plan, field",
    [
        ({"mode": "strict"}, "mode"),
        ({"events": {}}, "plan"),
        ({"mode": "block", "events": {"X": {"type": "nope"}}}, "events.X.type"),
        ({"mode": "block", "events": {"X": "not a schema"}}, "events.X"),
        ({"mode": "flag", "extra": 1}, "plan"),
    ],
)
def test_a_malformed_plan_is_a_4xx_naming_the_path_and_changes_nothing(
    app, client, token, plan, field
):
    source = new_source(app)
    response = client.put(plan_url(source.id), json={"plan": plan}, headers=token)
    assert 400 <= response.status_code < 500
    assert field in json.dumps(response.get_json())
    assert client.get(plan_url(source.id), headers=token).get_json() == {"plan": None}


def test_removing_the_plan_accepts_everything_again(app, client, token):
    source = new_source(app)
    client.put(plan_url(source.id), json={"plan": PLAN}, headers=token)
    assert client.put(plan_url(source.id), json={"plan": None}, headers=token).status_code == 200
    forget_write_keys()
    body = post(client, "/v1/track", {"userId": "u", "event": "Surprise"}, source.write_key)
    assert body.get_json()["accepted"] == 1


def test_only_roles_that_edit_sources_may_set_a_plan(app, client):
    source = new_source(app)
    analyst = bearer(issue_token(app, make_user(app, "analyst")))
    assert client.get(plan_url(source.id), headers=analyst).status_code in (200, 403)
    response = client.put(plan_url(source.id), json={"plan": PLAN}, headers=analyst)
    assert response.status_code == 403


def test_unknown_source_is_404(client, token):
    response = client.put(plan_url("src_nope"), json={"plan": PLAN}, headers=token)
    assert response.status_code == 404


def test_cli_sets_shows_and_clears_a_plan(app, runner, tmp_path):
    source = new_source(app)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(PLAN))
    result = runner.invoke(args=["sources", "plan", source.id, "--file", str(path)])
    assert result.exit_code == 0, result.output
    assert json.loads(runner.invoke(args=["sources", "plan", source.id]).output) == PLAN
    path.write_text('{"mode": "strict"}')
    bad = runner.invoke(args=["sources", "plan", source.id, "--file", str(path)])
    assert bad.exit_code != 0 and "mode" in bad.output
    cleared = runner.invoke(args=["sources", "plan", source.id, "--clear"])
    assert cleared.exit_code == 0 and json.loads(cleared.output) is None


def test_source_page_shows_and_saves_the_plan(app, client, auth, admin):
    source = new_source(app)
    auth.login()
    page = client.get(f"/sources/{source.id}").get_data(as_text=True)
    assert 'data-testid="tracking-plan"' in page and 'data-testid="plan-json"' in page
    token = csrf_token_from(page)
    url = f"/sources/{source.id}/tracking-plan"
    assert client.post(url, data={"plan": json.dumps(PLAN)}).status_code == 400  # no CSRF token
    saved = client.post(url, data={"plan": json.dumps(PLAN), "csrf_token": token})
    assert saved.status_code == 302
    page = client.get(f"/sources/{source.id}").get_data(as_text=True)
    assert "<code>Order Completed</code>" in page
    bad = client.post(url, data={"plan": '{"mode": "strict"', "csrf_token": token})
    assert bad.status_code == 422
    bad = client.post(url, data={"plan": '{"mode": "strict"}', "csrf_token": token})
    assert bad.status_code == 422 and "mode" in bad.get_data(as_text=True)
    token = csrf_token_from(client.get(f"/sources/{source.id}").get_data(as_text=True))
    assert client.post(url, data={"plan": "", "csrf_token": token}).status_code == 302
    with app.app_context():
        from cdp.sources import get_source

        assert get_source(source.id).tracking_plan is None
