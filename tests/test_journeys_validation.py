"""Journey validation: every rule reports its problem at the exact JSON Pointer, with a stable code.

Also the shared set-up of the journey tests (``World``, ``refill``), imported by
test_journeys_service.py and test_journeys_api.py.
"""

from __future__ import annotations

import copy
import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdp.actors import SYSTEM
from cdp.content import operations as ops
from cdp.db import utcnow
from cdp.loyalty.campaigns import create_campaign, set_status
from journeys.validation import pin_content, validate
from segments.service import archive_segment, create_segment
from tests.test_content import SMS_MARKETING, Team, approved, sms_fields

WECHAT_BODY = {"template_id": "TPL-REFILL", "fields": {"keyword1": "{{ context.drug }}"}}
CITY = {"rule": {"type": "trait", "trait": "city", "op": "equals", "value": "长沙"}}


class World:
    """Approved content of each kind, an active segment and coupon campaigns."""

    def __init__(self, app):
        self.app = app
        self.team = Team(app)
        self.wechat = approved(
            self.team, kind="wechat_template", name="续方提醒", **sms_fields(body=WECHAT_BODY)
        ).item_id
        self.sms = approved(self.team, name="续方短信").item_id
        self.segment = create_segment(SYSTEM, "长沙患者", CITY).id
        self.campaign = self.make_campaign()

    def make_campaign(self, **overrides) -> int:
        data = {"name": "续方立减", "type": "amount_off", "value": 10, "budget": 100}
        data.update(valid_days=30, status="active", **overrides)
        return create_campaign(SYSTEM, data).id

    def content(self, kind="sms", **fields) -> int:
        return approved(self.team, kind=kind, name=f"{kind}-extra", **sms_fields(**fields)).item_id


@pytest.fixture
def world(app_ctx):
    return World(app_ctx)


def refill(w: World) -> dict:
    """A valid refill reminder: per medicine, WeChat notice, then points or a coupon."""
    return {
        "category": "service",
        "audience": {"kind": "patient", "segment_id": w.segment},
        "trigger": {"type": "event", "event": "pos_purchase", "entry_key": "properties.drug_code"},
        "entry": {"reentry": "after_exit", "max_concurrent": 5},
        "exit": [{"event": "unsubscribe"}, {"segment_exit": w.segment}],
        "goal": {"event": "pos_purchase", "within_days": 14},
        "start": "wait_runout",
        "steps": [
            {
                "id": "wait_runout",
                "type": "wait",
                "until_trait": "refill_run_out_date",
                "offset_days": -5,
                "at": "10:00",
                "next": "remind",
            },
            {
                "id": "remind",
                "type": "send",
                "channel": "wechat",
                "content_id": w.wechat,
                "next": "wait_buy",
            },
            {
                "id": "wait_buy",
                "type": "wait_for_event",
                "event": "pos_purchase",
                "match_entry_key": True,
                "timeout": "7d",
                "next": "points",
                "timeout_next": "coupon",
            },
            {"id": "points", "type": "award_points", "action": "survey_completed"},
            {"id": "coupon", "type": "issue_coupon", "campaign_id": w.campaign, "next": "tell"},
            {"id": "tell", "type": "send", "channel": "sms", "content_id": w.sms},
        ],
    }


def found(problems) -> set[tuple[str, str]]:
    return {(p["path"], p["code"]) for p in problems}


def step(definition: dict, step_id: str) -> dict:
    return next(s for s in definition["steps"] if s["id"] == step_id)


def test_a_complete_journey_is_valid(world):
    assert validate(refill(world)) == []


def test_not_an_object_and_schema_errors_name_their_path(world):
    assert found(validate(["steps"])) == {("", "not_object")}
    assert found(validate({})) == {("", "required")}
    assert {p["message"] for p in validate({})} == {
        f"'{key}' is required" for key in ("audience", "trigger", "start", "steps")
    }
    bad = refill(world)
    bad["audience"]["kind"] = "doctor"
    bad["trigger"] = {"type": "webinar"}
    bad["steps"][0]["duration"] = "7d"  # beside until_trait: a wait takes one of the three
    bad["steps"][1]["colour"] = "red"
    bad["steps"][4]["id"] = "9lives"
    bad["steps"][5].pop("type")
    problems = validate(bad)
    assert found(problems) >= {
        ("/audience/kind", "not_allowed"),
        ("/trigger/type", "not_allowed"),
        ("/steps/0", "one_of"),
        ("/steps/1", "unknown_key"),
        ("/steps/4/id", "bad_format"),
        ("/steps/5", "required"),
    }
    messages = {p["path"]: p["message"] for p in problems}
    assert messages["/trigger/type"] == (
        "must be one of: event, segment_entry, date_trait, schedule"
    )
    assert messages["/steps/0"] == "give only one of: duration; until_time; until_trait"
    assert messages["/steps/1"] == "unknown key(s): colour"
    assert "starts with a letter" in messages["/steps/4/id"]
    # A step without a type is not also checked against every type's rules.
    at_five = [(p["code"], p["message"]) for p in problems if p["path"] == "/steps/5"]
    assert at_five == [("required", "'type' is required"), ("unreachable_step", at_five[1][1])]


def test_one_of_errors_explain_the_branch_that_was_meant(world):
    definition = refill(world)
    step(definition, "wait_buy")["match_entry_key"] = False
    definition["trigger"] = {"type": "event"}
    definition["exit"] = [{"event": "x", "where": [{"property": "a", "op": "in"}]}]
    assert found(validate(definition)) == {
        ("/trigger", "required"),
        ("/exit/0/where/0", "required"),
    }
    definition["exit"] = []
    definition["trigger"] = {"type": "schedule", "segment_id": world.segment}
    assert validate(definition) == [
        {"path": "/trigger", "code": "one_of", "message": "give one of: at; every and time"}
    ]
    definition["trigger"] = {"type": "schedule", "at": "2030-01-01 09:00"}
    assert found(validate(definition)) == {("/trigger/at", "bad_datetime")}
    definition["trigger"] = {"type": "schedule", "every": "week", "time": "25:00"}
    assert found(validate(definition)) == {("/trigger/time", "bad_format")}


def test_unknown_and_duplicate_step_ids(world):
    definition = refill(world)
    definition["start"] = "begin"
    step(definition, "remind")["next"] = "nowhere"
    step(definition, "wait_buy")["timeout_next"] = "gone"
    definition["steps"].append({"id": "remind", "type": "exit"})
    definition["steps"].append(
        {"id": "pick", "type": "split", "paths": [{"percent": 50, "next": "x"}, {"percent": 50}]}
    )
    problems = found(validate(definition))
    assert {
        ("/start", "unknown_step"),
        ("/steps/1/next", "unknown_step"),
        ("/steps/2/timeout_next", "unknown_step"),
        ("/steps/6/id", "duplicate_step_id"),
        ("/steps/7/paths/0/next", "unknown_step"),
        ("/steps/7/paths/1", "required"),  # a path that is not a holdout needs a next
    } <= problems


def test_unreachable_steps(world):
    definition = refill(world)
    step(definition, "coupon")["next"] = "done"
    definition["steps"] += [{"id": "orphan", "type": "exit"}, {"id": "done", "type": "exit"}]
    assert found(validate(definition)) == {
        ("/steps/5", "unreachable_step"),
        ("/steps/6", "unreachable_step"),
    }
    step(definition, "wait_buy")["timeout_next"] = "points"
    assert found(validate(definition)) == {
        (f"/steps/{n}", "unreachable_step") for n in (4, 5, 6, 7)
    }


def test_loops_need_a_wait(world):
    definition = refill(world)
    step(definition, "points")["next"] = "again"
    definition["steps"].append(
        {
            "id": "again",
            "type": "branch",
            "condition": {"type": "profile_kind", "kind": "patient"},
            "then": "points",
            "else": "wait_runout",
        }
    )
    problems = validate(definition)
    assert found(problems) == {("/steps/3", "cycle_without_wait")}
    assert "points → again → points" in problems[0]["message"]
    # Through a wait it is a legitimate loop (e.g. a monthly reminder).
    step(definition, "again")["then"] = "wait_runout"
    assert validate(definition) == []
    # A step that leads to itself spins too.
    step(definition, "again")["then"] = "again"
    assert found(validate(definition)) == {("/steps/6", "cycle_without_wait")}


def test_split_percentages_and_holdouts(world):
    definition = refill(world)
    step(definition, "remind")["next"] = "ab"
    paths = [
        {"percent": 45, "next": "wait_buy"},
        {"percent": 45, "holdout": True},
        {"percent": 20, "holdout": True},
    ]
    definition["steps"].append({"id": "ab", "type": "split", "paths": paths})
    assert found(validate(definition)) == {
        ("/steps/6/paths", "split_percent_sum"),
        ("/steps/6/paths/2", "split_holdouts"),
    }
    paths[1]["next"] = "wait_buy"
    assert ("/steps/6/paths/1", "not_allowed") in found(validate(definition))
    del paths[1]["next"]
    paths[2].update(holdout=False, percent=10, next="wait_buy")
    assert validate(definition) == []


def test_branch_conditions_are_segment_rules_and_their_segments_must_exist(world):
    definition = refill(world)
    step(definition, "points")["next"] = "check"
    condition = {
        "and": [
            {"type": "trait", "trait": "city", "op": "between", "value": 1},
            {"type": "trait", "trait": "city", "op": "bogus", "value": 1},
            {"type": "segment", "segment_id": 999},
            {"type": "segment", "segment_id": world.segment},
        ]
    }
    definition["steps"].append(
        {"id": "check", "type": "branch", "condition": condition, "then": "tell", "else": "tell"}
    )
    assert found(validate(definition)) == {
        ("/steps/6/condition/and/0/value", "bad_condition"),
        ("/steps/6/condition/and/1/op", "bad_condition"),
        ("/steps/6/condition/and/2/segment_id", "unknown_segment"),
    }


def test_referenced_segments_exist_and_are_active(world):
    definition = refill(world)
    definition["audience"]["segment_id"] = 404
    definition["exit"][1]["segment_exit"] = 405
    assert found(validate(definition)) == {
        ("/audience/segment_id", "unknown_segment"),
        ("/exit/1/segment_exit", "unknown_segment"),
    }
    definition = refill(world)
    definition["trigger"] = {"type": "segment_entry", "segment_id": world.segment}
    step(definition, "wait_buy")["match_entry_key"] = False
    assert validate(definition) == []
    archive_segment(SYSTEM, world.segment)
    assert found(validate(definition)) == {
        ("/audience/segment_id", "segment_archived"),
        ("/trigger/segment_id", "segment_archived"),
        ("/exit/1/segment_exit", "segment_archived"),
    }


def test_send_steps_need_approved_content_of_the_channels_kind(world):
    definition = refill(world)
    remind, tell = step(definition, "remind"), step(definition, "tell")
    remind["content_id"] = world.sms  # an SMS cannot go out as a WeChat template message
    tell["content_id"] = 9999
    assert found(validate(definition)) == {
        ("/steps/1/content_id", "content_wrong_kind"),
        ("/steps/5/content_id", "unknown_content"),
    }
    draft = ops.create_item(world.team.marketer, "未审", "sms", **sms_fields())
    remind["content_id"], tell["content_id"] = world.wechat, draft.item_id
    assert found(validate(definition)) == {("/steps/5/content_id", "content_not_approved")}
    # Approved content stops being sendable on the day after it expires.
    tell["content_id"] = world.sms
    later = utcnow() + timedelta(days=400)
    assert found(validate(definition, at=later)) == {
        ("/steps/1/content_id", "content_not_approved"),
        ("/steps/5/content_id", "content_not_approved"),
    }


def test_content_guards_apply_rx_never_reaches_a_patient_journey(world):
    definition = refill(world)
    rx_text = "【康护】{{ profile.name }}医生，新适应症资料已更新。"
    step(definition, "tell")["content_id"] = world.content(
        text=rx_text, product_class="rx", products=["恩格列净"], audience="hcp"
    )
    problems = validate(definition)
    assert found(problems) == {("/steps/5/content_id", "rx_to_patient")}
    assert "prescription (Rx)" in problems[0]["message"]
    # Content for doctors in a patient journey, and marketing content in a service journey.
    step(definition, "tell")["content_id"] = world.content(audience="hcp")
    assert found(validate(definition)) == {("/steps/5/content_id", "audience_mismatch")}
    marketing = world.content(text=SMS_MARKETING, category="marketing")
    step(definition, "tell")["content_id"] = marketing
    assert found(validate(definition)) == {("/steps/5/content_id", "marketing_in_service_journey")}
    definition["category"] = "marketing"
    assert validate(definition) == []


def test_webhooks_need_approved_webhook_content_and_an_allowed_url(world, app):
    hook = world.content(kind="webhook", body={"payload": {"event": "{{ context.drug }}"}})
    definition = refill(world)
    step(definition, "points")["next"] = "crm"
    crm = {"id": "crm", "type": "webhook", "url": "http://crm.local/hook", "content_id": hook}
    definition["steps"].append(crm)
    assert found(validate(definition)) == {("/steps/6/url", "webhook_url_not_allowed")}
    app.config["JOURNEY_WEBHOOK_ALLOWED_HOSTS"] = ("crm.local",)
    assert validate(definition) == []
    crm.update(url="https://crm.example.cn/hook", content_id=world.sms)
    assert found(validate(definition)) == {("/steps/6/content_id", "content_wrong_kind")}


def test_coupon_campaigns_exist_are_running_and_fit_the_audience(world):
    definition = refill(world)
    coupon = step(definition, "coupon")
    coupon["campaign_id"] = 777
    assert found(validate(definition)) == {("/steps/4/campaign_id", "unknown_campaign")}
    coupon["campaign_id"] = world.make_campaign(audience="hcp")
    assert found(validate(definition)) == {("/steps/4/campaign_id", "campaign_audience_mismatch")}
    coupon["campaign_id"] = world.campaign
    set_status(SYSTEM, world.campaign, "ended")
    assert found(validate(definition)) == {("/steps/4/campaign_id", "campaign_ended")}
    coupon["campaign_id"] = world.make_campaign(valid_until=utcnow() + timedelta(days=1))
    assert validate(definition) == []
    later = utcnow() + timedelta(days=2)
    assert ("/steps/4/campaign_id", "campaign_ended") in found(validate(definition, at=later))


def test_points_actions_are_configured_and_doctors_get_educational_ones_only(world):
    definition = refill(world)
    step(definition, "points")["action"] = "bought_statins"
    assert found(validate(definition)) == {("/steps/3/action", "unknown_points_action")}
    doctors = {
        "audience": {"kind": "hcp"},
        "trigger": {"type": "date_trait", "trait": "meeting_date", "offset_days": -3},
        "start": "points",
        "steps": [{"id": "points", "type": "award_points", "action": "survey_completed"}],
    }
    assert found(validate(doctors)) == {("/steps/0/action", "points_action_not_for_hcp")}
    doctors["steps"][0]["action"] = "cme_module_completed"
    assert validate(doctors) == []


def test_quiet_hours_and_entry_keys(world, app):
    definition = refill(world)
    definition["quiet_hours"] = {"start": "21:00", "end": "21:00"}
    assert found(validate(definition)) == {("/quiet_hours", "quiet_hours_empty")}
    app.config["JOURNEY_QUIET_HOURS"] = ("21:00", "07:00")
    definition["quiet_hours"] = {"end": "21:00"}  # start comes from the setting
    assert found(validate(definition)) == {("/quiet_hours", "quiet_hours_empty")}
    definition["quiet_hours"] = {"start": "22:30", "end": "07:30", "policy": "skip"}
    del definition["trigger"]["entry_key"]
    assert found(validate(definition)) == {("/steps/2/match_entry_key", "no_entry_key")}


def test_pin_content_stamps_the_approved_version_and_leaves_the_draft_alone(world):
    definition = refill(world)
    before = copy.deepcopy(definition)
    pinned = pin_content(definition)
    assert definition == before
    first = step(pinned, "remind")["content_version_id"]
    assert "content_version_id" not in step(pinned, "coupon")
    # A newer approved version is what the next publish pins.
    newer = ops.new_version(world.team.marketer, world.wechat)
    ops.submit(world.team.marketer, newer.id)
    ops.approve(world.team.reviewer, newer.id, approval_code="MLR-2")
    again = pin_content(pinned)
    assert step(again, "remind")["content_version_id"] == newer.id != first
    assert validate(again) == []


def test_the_documented_examples_are_valid_but_for_their_placeholder_ids(app_ctx):
    text = (Path(__file__).parent.parent / "docs" / "journeys.md").read_text(encoding="utf-8")
    examples = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, re.S)]
    examples = [e for e in examples if "steps" in e]
    assert len(examples) == 4
    placeholders = {"unknown_content", "unknown_campaign", "unknown_segment"}
    for example in examples:
        problems = [p for p in validate(example) if p["code"] not in placeholders]
        # refill_on_time is an action the operator configures (docs say so).
        assert [p["message"] for p in problems if "refill_on_time" not in p["message"]] == []


JUNK = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.sampled_from(["", "a", "wait", "remind", "send", "7d", "10:00", "https://x", "c"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_any_damage_to_a_definition_gives_problems_never_an_exception(world, data):
    """What a half-edited draft in the builder can look like: validation still answers."""
    definition = refill(world)
    for _ in range(data.draw(st.integers(1, 3))):
        target = definition
        keys = data.draw(
            st.sampled_from(["audience", "trigger", "steps", "exit", "entry", "start"])
        )
        if keys == "steps":
            target = data.draw(st.sampled_from(definition["steps"]))
            keys = data.draw(st.sampled_from(sorted(target) + ["paths", "condition"]))
        target[keys] = data.draw(JUNK)
    problems = validate(definition)
    assert all(set(p) == {"path", "code", "message"} for p in problems)
    assert all(p["path"] == "" or p["path"].startswith("/") for p in problems)
