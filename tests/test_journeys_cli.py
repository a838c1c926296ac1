"""`cdp journeys …`: list, show, validate, publish, pause, resume, sweep, seed-demo --if-empty."""

from __future__ import annotations

import copy

import orjson
import pytest
import sqlalchemy as sa

from cdp.actors import SYSTEM
from cdp.db import db
from cdp.sources import create_source
from journeys import service
from journeys.models import JourneyInstance
from tests.journey_helpers import person, track

DEFINITION = {
    "category": "service",
    "audience": {"kind": "patient"},
    "trigger": {"type": "event", "event": "signed_up"},
    "start": "later",
    "steps": [
        {"id": "later", "type": "wait", "duration": "1h", "next": "mark"},
        {"id": "mark", "type": "update_trait", "trait": "welcomed", "value": True},
    ],
}
BROKEN = {
    "audience": {"kind": "robot"},
    "trigger": {"type": "event", "event": "signed_up"},
    "start": "later",
    "steps": [{"id": "later", "type": "wait", "duration": "soon", "next": "nowhere"}],
}


def invoke(runner, *args):
    return runner.invoke(args=["journeys", *args])


def as_json(runner, *args) -> dict:
    result = invoke(runner, *args, "--json")
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout)


@pytest.fixture
def journey_id(app) -> int:
    with app.app_context():
        return service.create_journey(SYSTEM, "注册欢迎", copy.deepcopy(DEFINITION), "说明").id


def test_validate_prints_every_problem_with_its_path_and_exits_1(runner, tmp_path):
    path = tmp_path / "broken.json"
    path.write_bytes(orjson.dumps(BROKEN))
    result = invoke(runner, "validate", str(path))
    assert result.exit_code == 1
    assert "/audience/kind: must be one of: patient, hcp (not_allowed)" in result.output
    assert "/steps/0/duration: 'soon' is not valid" in result.output
    assert "/steps/0/next: no step 'nowhere' (unknown_step)" in result.output
    payload = orjson.loads(invoke(runner, "validate", str(path), "--json").stdout)
    assert payload["valid"] is False
    assert {p["code"] for p in payload["problems"]} >= {"not_allowed", "unknown_step"}
    # A valid definition, or an API create body holding one, passes.
    path.write_bytes(orjson.dumps({"name": "x", "definition": DEFINITION}))
    result = invoke(runner, "validate", str(path))
    assert result.exit_code == 0 and "valid: no problems" in result.output
    path.write_text("{not json")
    assert invoke(runner, "validate", str(path)).exit_code == 2


def test_list_and_show(app, runner, journey_id):
    listed = as_json(runner, "list")["journeys"]
    assert [(j["id"], j["name"], j["status"]) for j in listed] == [
        (journey_id, "注册欢迎", "draft")
    ]
    assert "注册欢迎" in invoke(runner, "list").output
    shown = as_json(runner, "show", str(journey_id))
    assert shown["definition"] == DEFINITION and shown["description"] == "说明"
    assert shown["totals"]["entered"] == 0
    text = invoke(runner, "show", str(journey_id)).output
    assert f"#{journey_id} 注册欢迎 [draft" in text and '"start": "later"' in text
    missing = invoke(runner, "show", "999999")
    assert missing.exit_code == 2 and "no such journey" in missing.output
    assert as_json(runner, "list", "--status", "published")["journeys"] == []


def test_publish_pause_resume(app, runner, journey_id):
    published = as_json(runner, "publish", str(journey_id), "--note", "first")
    assert (published["version"], published["status"]) == (1, "published")
    assert as_json(runner, "pause", str(journey_id))["status"] == "paused"
    again = invoke(runner, "pause", str(journey_id))
    assert again.exit_code == 2 and "cannot pause a journey that is paused" in again.output
    assert as_json(runner, "resume", str(journey_id))["status"] == "published"
    with app.app_context():
        assert service.list_versions(journey_id)[0].note == "first"
        service.update_journey(SYSTEM, journey_id, definition=BROKEN)
    refused = invoke(runner, "publish", str(journey_id))
    assert refused.exit_code == 1
    assert "/steps/0/next: no step 'nowhere' (unknown_step)" in refused.output
    with app.app_context():
        assert [v.number for v in service.list_versions(journey_id)] == [1]


def test_sweep_advances_due_instances_inline(app, runner, journey_id):
    with app.app_context():
        service.publish(SYSTEM, journey_id)
        source = create_source(SYSTEM, "Web", "http")[0]
        person(source, "u1")
        track(source, "u1", "signed_up")
        (instance,) = db.session.scalars(sa.select(JourneyInstance)).all()
        assert instance.state == "active"
    swept = as_json(runner, "sweep")
    assert swept["advanced"] == 1 and swept["due"] == 1
    with app.app_context():
        instance = db.session.scalars(sa.select(JourneyInstance)).one()
        assert (instance.state, instance.step_id) == ("waiting", "later")
    assert "advanced 0" in invoke(runner, "sweep").output  # nothing is due any more


def test_seed_demo_needs_the_demo_users_and_if_empty_leaves_journeys_alone(runner, journey_id):
    skipped = as_json(runner, "seed-demo", "--if-empty")
    assert skipped["skipped"] is True and skipped["journeys"] == []
    result = invoke(runner, "seed-demo")
    assert result.exit_code == 2 and "run `cdp seed-demo` first" in result.output
