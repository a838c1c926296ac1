"""The journey engine: entries per medicine, waits, branches, sends, quiet hours, caps, control."""

from __future__ import annotations

from datetime import timedelta

import pytest

from cdp.actors import SYSTEM
from cdp.consent import record_consent
from cdp.db import db, utcnow
from cdp.sources import create_source
from journeys.channels import CHANNELS, PermanentError
from journeys.control import in_global_control
from journeys.engine import delivery, runner
from journeys.models import ChannelUnreachable, JourneyStepLog
from journeys.tasks import claim_due
from tests.journey_helpers import (
    PLAIN_SMS,
    PROMO_SMS,
    RecordingSms,
    deliveries,
    grant,
    instances,
    later,
    local,
    person,
    publish,
    run,
    sms_content,
    track,
)
from tests.test_content import Team

ITEMS = [
    {"drug_code": "D001", "name": "二甲双胍", "days_of_supply": 30, "qty": 1},
    {"drug_code": "D002", "name": "阿托伐他汀", "days_of_supply": 10, "qty": 1},
]


@pytest.fixture
def team(app_ctx):
    return Team(app_ctx)


@pytest.fixture
def source(app_ctx):
    return create_source(SYSTEM, "POS", "http")[0]


@pytest.fixture(autouse=True)
def sms(app, monkeypatch):
    """Every journey send in these tests goes to the recording channel; no control group."""
    RecordingSms.calls, RecordingSms.fail_with = [], None
    monkeypatch.setitem(CHANNELS, "sms", RecordingSms)
    app.config["JOURNEY_GLOBAL_CONTROL_PERCENT"] = 0
    app.config["JOURNEY_QUIET_HOURS"] = ("00:00", "00:00")  # off unless a test says otherwise
    return RecordingSms


def refill(content_id: int, **extra) -> dict:
    return {
        "category": "service",
        "audience": {"kind": "patient"},
        "trigger": {"type": "event", "event": "pos_purchase", "for_each": "items",
                    "entry_key": "drug_code"},
        "entry": {"reentry": "after_exit", "max_concurrent": 5},
        "start": "wait",
        "steps": [
            {"id": "wait", "type": "wait", "until_trait": "context.run_out_date",
             "offset_days": -5, "next": "remind"},
            {"id": "remind", "type": "send", "channel": "sms", "content_id": content_id,
             "next": "bought"},
            {"id": "bought", "type": "wait_for_event", "event": "pos_purchase",
             "match_entry_key": True, "timeout": "7d", "next": "thanks",
             "timeout_next": "lapsed"},
            {"id": "thanks", "type": "update_trait", "trait": "refill_status",
             "value": "on_time"},
            {"id": "lapsed", "type": "update_trait", "trait": "refill_status", "value": "lapsed"},
        ],
        **extra,
    }  # fmt: skip


def content(team, **kw):
    item_id, version_id = sms_content(team, **kw)
    return item_id, version_id


def pinned(definition: dict, version_id: int) -> dict:
    for step in definition["steps"]:
        if step["type"] == "send":
            step["content_version_id"] = version_id
    return definition


def test_one_instance_per_medicine_waits_until_run_out_and_sends_once(team, source, sms):
    item_id, version_id = content(team)
    journey = publish(pinned(refill(item_id), version_id))
    person(source, "u1", phone="13800138001")
    track(source, "u1", "pos_purchase", items=ITEMS, store_code="S1")
    track(source, "u1", "pos_purchase", items=ITEMS, store_code="S1")  # same purchase again
    rows = instances(journey.id)
    assert sorted((r.entry_key, r.rotation) for r in rows) == [("D001", 0), ("D002", 0)]
    run()
    assert {r.state for r in instances(journey.id)} == {"waiting"}
    assert not deliveries()
    # D002 covers 10 days: its reminder is due 5 days before, at 09:00 local.
    run(later(days=6))
    sent = deliveries(status="sent")
    assert [d.payload["entry_key"] for d in sent] == ["D002"]
    assert sms.calls[0].key == sent[0].key and "阿托伐他汀" in sms.calls[0].message["text"]
    # Running again (a job retried, the sweeper racing) sends nothing twice.
    run(later(days=6))
    assert len(sms.calls) == 1 and len(deliveries()) == 1


def test_wait_for_event_takes_the_event_branch_only_for_the_same_medicine(team, source):
    item_id, version_id = content(team)
    journey = publish(pinned(refill(item_id), version_id))
    person(source, "u2")
    track(source, "u2", "pos_purchase", items=ITEMS[1:])
    run(later(days=6))  # reminder sent, now waiting for a purchase
    (instance,) = instances(journey.id)
    assert (instance.step_id, instance.waiting_event) == ("bought", "pos_purchase")
    moment = instance.step_entered_at + timedelta(minutes=1)
    track(source, "u2", "pos_purchase", moment, items=ITEMS[:1])  # another medicine
    run(moment)
    assert instances(journey.id)[0].step_id == "bought"
    track(source, "u2", "pos_purchase", moment, items=ITEMS[1:])  # the same one: refilled
    run(moment + timedelta(minutes=1))
    first = instances(journey.id)[0]
    assert first.state == "completed"
    outcomes = {log.outcome for log in db.session.query(JourneyStepLog).filter_by(
        instance_id=first.id, step_id="bought")}  # fmt: skip
    assert "event" in outcomes


def test_wait_for_event_times_out_to_the_other_branch(team, source):
    item_id, version_id = content(team)
    journey = publish(pinned(refill(item_id), version_id))
    pid = person(source, "u3")
    track(source, "u3", "pos_purchase", items=ITEMS[1:])
    run(later(days=6))
    run(later(days=14))
    (instance,) = instances(journey.id)
    assert instance.state == "completed"
    db.session.expire_all()
    from cdp.models import Profile

    assert db.session.get(Profile, pid).traits["refill_status"] == "lapsed"


def test_quiet_hours_defer_to_the_morning_or_skip_per_journey(team, source, app, sms):
    app.config["JOURNEY_QUIET_HOURS"] = ("22:00", "08:00")
    item_id, version_id = content(team, text=PLAIN_SMS)
    steps = [{"id": "hi", "type": "send", "channel": "sms", "content_id": item_id,
              "content_version_id": version_id}]  # fmt: skip
    base = {"category": "service", "audience": {"kind": "patient"},
            "trigger": {"type": "event", "event": "signed_up"}, "start": "hi", "steps": steps}  # fmt: skip
    deferring = publish({**base})
    skipping = publish({**base, "quiet_hours": {"policy": "skip"}})
    person(source, "u4")
    track(source, "u4", "signed_up", name="x", run_out_date="2026-01-01")
    night = local("2026-11-24", "23:30")
    run(night)
    waiting = instances(deferring.id)[0]
    assert waiting.state == "waiting"
    assert waiting.next_run_at == local("2026-11-25", "08:00")
    skipped = deliveries(journey_id=skipping.id)
    assert [(d.status, d.reason) for d in skipped] == [("skipped", "quiet_hours")]
    assert sms.calls == []
    run(local("2026-11-25", "08:01"))
    assert [d.status for d in deliveries(journey_id=deferring.id)] == ["sent"]


def test_frequency_cap_skips_the_fourth_marketing_sms_of_the_week(team, source, sms):
    item_id, version_id = content(team, text=PROMO_SMS, category="marketing")
    pid = person(source, "u5")
    grant(pid)
    for n in range(4):
        publish({"audience": {"kind": "patient"}, "trigger": {"type": "event", "event": f"e{n}"},
                 "start": "s", "steps": [{"id": "s", "type": "send", "channel": "sms",
                                          "content_id": item_id, "content_version_id": version_id}]},
                name=f"促销 {n}")  # fmt: skip
        track(source, "u5", f"e{n}")
        run()
    assert [d.status for d in deliveries()] == ["sent", "sent", "sent", "skipped"]
    assert deliveries()[-1].reason == "frequency_cap"
    assert len(sms.calls) == 3


def test_consent_withdrawn_while_waiting_skips_the_send_and_says_why(team, source, sms):
    item_id, version_id = content(team, text=PROMO_SMS, category="marketing")
    pid = person(source, "u6")
    grant(pid)
    journey = publish({"audience": {"kind": "patient"}, "trigger": {"type": "event", "event": "x"},
                       "start": "w", "steps": [
                           {"id": "w", "type": "wait", "duration": "1d", "next": "s"},
                           {"id": "s", "type": "send", "channel": "sms", "content_id": item_id,
                            "content_version_id": version_id}]})  # fmt: skip
    track(source, "u6", "x")
    run()
    record_consent(SYSTEM, pid, "marketing", "sms", "withdrawn")
    db.session.commit()
    run(later(days=1, minutes=1))
    assert [(d.status, d.reason) for d in deliveries(journey_id=journey.id)] == [
        ("skipped", "no_marketing_consent")
    ]
    assert sms.calls == []


def test_global_control_group_is_entered_for_measurement_but_never_touched(team, source, app):
    app.config["JOURNEY_GLOBAL_CONTROL_PERCENT"] = 50
    item_id, version_id = content(team, text=PLAIN_SMS)
    journey = publish({"category": "marketing", "audience": {"kind": "patient"},
                       "trigger": {"type": "event", "event": "x"}, "start": "s",
                       "goal": {"event": "bought", "within_days": 7},
                       "steps": [{"id": "s", "type": "send", "channel": "sms",
                                  "content_id": item_id, "content_version_id": version_id}]})  # fmt: skip
    users = [f"c{n}" for n in range(12)]
    pids = {user: person(source, user) for user in users}
    for user in users:
        track(source, user, "x")
        track(source, user, "bought")
    run()
    rows = {row.profile_id: row for row in instances(journey.id)}
    control = {pid for pid in pids.values() if in_global_control(pid)}
    assert control and control != set(pids.values())
    for pid, row in rows.items():
        if pid in control:
            assert (row.state, row.exit_reason, row.holdout) == ("exited", "global_control", True)
        assert row.converted_at is not None  # goals are tracked for both groups
    assert {d.profile_id for d in deliveries()} == set(pids.values()) - control


def test_split_holdout_receives_nothing_and_is_stable(team, source):
    item_id, version_id = content(team, text=PLAIN_SMS)
    definition = {"category": "service", "audience": {"kind": "patient"},
                  "trigger": {"type": "event", "event": "x"}, "start": "ab",
                  "steps": [{"id": "ab", "type": "split", "paths": [
                      {"percent": 50, "next": "s"}, {"percent": 50, "holdout": True}]},
                      {"id": "s", "type": "send", "channel": "sms", "content_id": item_id,
                       "content_version_id": version_id}]}  # fmt: skip
    journey = publish(definition)
    for n in range(20):
        person(source, f"h{n}")
        track(source, f"h{n}", "x")
    run()
    rows = instances(journey.id)
    held = [r for r in rows if r.holdout]
    assert 0 < len(held) < 20
    assert all(r.exit_reason == "holdout" for r in held)
    assert {d.profile_id for d in deliveries()} == {r.profile_id for r in rows if not r.holdout}


def test_exit_event_ends_instances_and_cancels_their_pending_sends(team, source):
    item_id, version_id = content(team)
    journey = publish(pinned(refill(item_id, exit=[{"event": "unsubscribe"}]), version_id))
    person(source, "u7")
    track(source, "u7", "pos_purchase", items=ITEMS)
    run()
    track(source, "u7", "unsubscribe")
    assert {(r.state, r.exit_reason) for r in instances(journey.id)} == {("exited", "exit_event")}
    run(later(days=30))
    assert deliveries() == []


def test_branch_uses_the_segment_rule_language(team, source):
    definition = {"category": "service", "audience": {"kind": "patient"},
                  "trigger": {"type": "event", "event": "x"}, "start": "b",
                  "steps": [{"id": "b", "type": "branch",
                             "condition": {"type": "trait", "trait": "city", "op": "equals",
                                           "value": "上海"},
                             "then": "sh", "else": "other"},
                            {"id": "sh", "type": "update_trait", "trait": "seg", "value": "sh"},
                            {"id": "other", "type": "update_trait", "trait": "seg",
                             "value": "other"}]}  # fmt: skip
    journey = publish(definition)
    person(source, "b1", city="上海")
    person(source, "b2", city="北京")
    track(source, "b1", "x")
    track(source, "b2", "x")
    run()
    by_step = {d.profile_id: d.step_id for d in deliveries(journey_id=journey.id)}
    assert sorted(by_step.values()) == ["other", "sh"]


def test_once_reentry_and_max_concurrent(team, source):
    definition = {"category": "service", "audience": {"kind": "patient"},
                  "trigger": {"type": "event", "event": "x"}, "entry": {"reentry": "once"},
                  "start": "w", "steps": [{"id": "w", "type": "wait", "duration": "1h"}]}  # fmt: skip
    once = publish(definition)
    again = publish({**definition, "entry": {"reentry": "after_exit"}})
    person(source, "r1")
    track(source, "r1", "x")
    track(source, "r1", "x")  # still inside both: no second instance anywhere
    assert len(instances(once.id)) == len(instances(again.id)) == 1
    run(later(hours=2))  # both finished
    track(source, "r1", "x")
    assert len(instances(once.id)) == 1
    assert [r.rotation for r in instances(again.id)] == [0, 1]


def test_paused_journeys_hold_their_instances(team, source):
    journey = publish({"category": "service", "audience": {"kind": "patient"},
                       "trigger": {"type": "event", "event": "x"}, "start": "w",
                       "steps": [{"id": "w", "type": "wait", "duration": "1h"}]})  # fmt: skip
    person(source, "p1")
    track(source, "p1", "x")
    journey.status = "paused"
    db.session.commit()
    run(later(hours=2))
    assert instances(journey.id)[0].state == "active"
    journey.status = "published"
    db.session.commit()
    run(later(hours=3))
    assert instances(journey.id)[0].state == "completed"


def test_sweeper_claims_only_what_is_due(team, source):
    journey = publish({"category": "service", "audience": {"kind": "patient"},
                       "trigger": {"type": "event", "event": "x"}, "start": "w",
                       "steps": [{"id": "w", "type": "wait", "duration": "2d"}]})  # fmt: skip
    for n in range(5):
        person(source, f"s{n}")
        track(source, f"s{n}", "x")
    run()
    assert claim_due(utcnow()) == []
    assert len(claim_due(later(days=2, minutes=1))) == 5
    assert claim_due(later(days=2, minutes=1)) == []  # leased: not queued twice
    assert journey.id


def test_transient_errors_retry_with_backoff_then_fail(team, source, sms, app):
    app.config["JOURNEY_SEND_ATTEMPTS"] = 2
    item_id, version_id = content(team, text=PLAIN_SMS)
    from journeys.channels import TransientError

    sms.fail_with = TransientError("gateway_busy", "503")
    publish({"category": "service", "audience": {"kind": "patient"},
             "trigger": {"type": "event", "event": "x"}, "start": "s",
             "steps": [{"id": "s", "type": "send", "channel": "sms", "content_id": item_id,
                        "content_version_id": version_id}]})  # fmt: skip
    person(source, "t1")
    track(source, "t1", "x")
    run()
    (row,) = deliveries()
    assert (row.status, row.reason, row.attempts) == ("pending", "gateway_busy", 1)
    assert row.next_attempt_at > utcnow() + timedelta(seconds=20)
    delivery.perform([row.id], row.next_attempt_at)
    assert deliveries()[0].status == "failed"
    assert len(sms.calls) == 2  # the rendered message was reused, not rendered twice


def test_permanent_errors_mark_the_profile_unreachable(team, source, sms):
    item_id, version_id = content(team, text=PLAIN_SMS)
    sms.fail_with = PermanentError("MOBILE_NUMBER_ILLEGAL", "bad number", unreachable=True)
    publish({"category": "service", "audience": {"kind": "patient"},
             "trigger": {"type": "event", "event": "x"}, "start": "s",
             "steps": [{"id": "s", "type": "send", "channel": "sms", "content_id": item_id,
                        "content_version_id": version_id}]})  # fmt: skip
    pid = person(source, "t2")
    track(source, "t2", "x")
    run()
    assert deliveries()[0].status == "failed"
    assert db.session.get(ChannelUnreachable, (pid, "sms")) is not None


def test_test_mode_only_lets_test_profiles_in_and_sends_to_the_preview_log(team, source, sms):
    item_id, version_id = content(team, text=PLAIN_SMS)
    tester = person(source, "tester")
    person(source, "someone")
    journey = publish({"category": "service", "audience": {"kind": "patient"},
                       "trigger": {"type": "event", "event": "x"}, "start": "s",
                       "steps": [{"id": "s", "type": "send", "channel": "sms",
                                  "content_id": item_id, "content_version_id": version_id}]},
                      test_profiles=[tester])  # fmt: skip
    track(source, "tester", "x")
    track(source, "someone", "x")
    run()
    assert [(r.profile_id, r.test) for r in instances(journey.id)] == [(tester, True)]
    (row,) = deliveries()
    assert row.status == "preview" and "text" in row.payload["message"]
    assert sms.calls == []


def test_refusing_automated_marketing_ends_every_marketing_journey(team, source, sms):
    """PIPL Art. 24: the refusal removes the person at once, and at every step after."""
    item_id, version_id = content(team, text=PROMO_SMS, category="marketing")
    pid = person(source, "pipl")
    grant(pid)
    definition = {"audience": {"kind": "patient"}, "trigger": {"type": "event", "event": "x"},
                  "start": "w", "steps": [
                      {"id": "w", "type": "wait", "duration": "1d", "next": "s"},
                      {"id": "s", "type": "send", "channel": "sms", "content_id": item_id,
                       "content_version_id": version_id}]}  # fmt: skip
    marketing = publish(definition)
    wait_only = [{"id": "w", "type": "wait", "duration": "1d"}]
    service = publish({**definition, "category": "service", "steps": wait_only})
    track(source, "pipl", "x")
    run()
    record_consent(SYSTEM, pid, "automated_marketing", "*", "withdrawn")
    db.session.commit()
    track(source, "pipl", "anything")  # the next batch of this person's events
    assert [(r.state, r.exit_reason) for r in instances(marketing.id)] == [
        ("exited", "automated_marketing_refused")
    ]
    assert instances(service.id)[0].state == "waiting"  # service notices continue
    run(later(days=2))
    assert deliveries(journey_id=marketing.id) == [] and sms.calls == []


def test_recovery_resends_only_what_the_provider_never_saw_or_can_dedupe(team, source, sms):
    """A worker died: never asked → sent again; asked a non-deduping provider → uncertain."""
    item_id, version_id = content(team, text=PLAIN_SMS)
    publish({"category": "service", "audience": {"kind": "patient"},
             "trigger": {"type": "event", "event": "x"}, "start": "s",
             "steps": [{"id": "s", "type": "send", "channel": "sms", "content_id": item_id,
                        "content_version_id": version_id}]})  # fmt: skip
    for user in ("r-never", "r-asked"):
        person(source, user)
        track(source, user, "x")
    now = utcnow()
    runner.advance(claim_due(now), now=now)
    never, asked = deliveries()
    # Both were claimed and rendered; then the worker died, once before asking the
    # provider and once while waiting for its answer.
    for row, stamp in ((never, None), (asked, now)):
        row.status, row.claimed_until, row.next_attempt_at = "sending", now, now
        row.payload = {**row.payload, "kind": "sms", "message": {"text": "x"}}
        row.sent_at = stamp
    db.session.commit()
    assert delivery.recover([never.id, asked.id], now + timedelta(seconds=1)) == {
        "pending": 1, "uncertain": 1}  # fmt: skip
    assert [(d.status, d.reason) for d in deliveries()] == [
        ("pending", None), ("uncertain", "worker_lost")]  # fmt: skip
    delivery.perform([never.id], now + timedelta(seconds=2))
    assert [d.status for d in deliveries()] == ["sent", "uncertain"]
    assert len(sms.calls) == 1
