"""The demo journeys: `cdp journeys seed-demo` publishes valid journeys, and the engine runs them
on the demo people: one refill reminder per medicine, coupons, doctors invited to a meeting."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

import orjson
import pytest
import sqlalchemy as sa

from cdp.consent import granted_profiles, refused_profiles
from cdp.db import db, utcnow
from cdp.hcp import processor
from cdp.ingest.pipeline import ingest
from cdp.ingest.tasks import process_batch, process_pending
from cdp.models import AuditEntry, Identity, Source, User
from cdp.models.content import ContentItem, ContentVersion
from cdp.models.hcp import Award, Meeting, Participant
from cdp.models.loyalty import Coupon, CouponCampaign
from cdp.seed import hcp as hcp_demo
from cdp.seed import vocab
from journeys import demo, service
from journeys.channels import CHANNELS
from journeys.engine.schedule import fire_due
from journeys.models import Delivery, Journey, JourneyInstance
from journeys.tasks import run_once
from journeys.validation import validate
from segments.models import Segment, SegmentMembership
from tests.journey_helpers import SHANGHAI, RecordingSms

DRUGS = vocab.DRUG_BY_CODE


class RecordingWechat(RecordingSms):
    name = "wechat"
    calls: list = []


class RecordingMiniprogram(RecordingSms):
    name = "miniprogram"
    calls: list = []


@pytest.fixture
def channels(app, monkeypatch):
    """Sends go to recording channels; no global control group, no default quiet hours."""
    for channel in (RecordingSms, RecordingWechat, RecordingMiniprogram):
        channel.calls, channel.fail_with = [], None
        monkeypatch.setitem(CHANNELS, channel.name, channel)
    app.config["JOURNEY_GLOBAL_CONTROL_PERCENT"] = 0
    app.config["JOURNEY_QUIET_HOURS"] = ("00:00", "00:00")
    return {"sms": RecordingSms, "wechat": RecordingWechat, "miniprogram": RecordingMiniprogram}


def invoke(runner, *args) -> dict:
    result = runner.invoke(args=[*args, "--json"])
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout)


@pytest.fixture
def seeded(app, runner, channels) -> dict:
    invoke(runner, "seed-demo", "--patients", "300", "--doctors", "60")
    invoke(runner, "loyalty", "seed-demo")
    invoke(runner, "hcp", "seed-demo")
    return invoke(runner, "journeys", "seed-demo")


def _journey(key: str) -> Journey:
    return db.session.scalar(sa.select(Journey).where(Journey.name == demo.NAMES[key]))


def _live(key: str) -> dict:
    journey = _journey(key)
    return service.get_version(journey.id, journey.live_version).definition


def _counts() -> list[int]:
    models = (Journey, ContentItem, ContentVersion, Segment, CouponCampaign)
    return [db.session.scalar(sa.select(sa.func.count()).select_from(m)) for m in models]


def _at(day: date, hm: str) -> datetime:
    return datetime.combine(day, time.fromisoformat(hm), SHANGHAI)


def _track(source_id: str, ids: list[dict], event: str, at: datetime | None = None, **props):
    message = {"type": "track", "event": event, "properties": props,
               "context": {"externalIds": ids}}  # fmt: skip
    if at is not None:
        message["timestamp"] = at.isoformat()
    result = ingest(db.session.get(Source, source_id), [message])
    assert result.accepted == 1, result.rejected
    process_batch(result.outbox_id)


def _instances(key: str) -> dict[str, JourneyInstance]:
    db.session.expire_all()
    rows = db.session.scalars(
        sa.select(JourneyInstance).where(JourneyInstance.journey_id == _journey(key).id)
    )
    return {row.entry_key: row for row in rows}


def _deliveries(key: str, step_id: str) -> list[Delivery]:
    query = sa.select(Delivery).where(
        Delivery.journey_id == _journey(key).id, Delivery.step_id == step_id
    )
    return list(db.session.scalars(query.order_by(Delivery.id)))


def test_seed_demo_publishes_journeys_that_validate(app, seeded):
    assert sorted(j["name"] for j in seeded["journeys"]) == sorted(demo.NAMES.values())
    with app.app_context():
        marketer, reviewer = (
            db.session.scalar(sa.select(User.id).where(User.role == role))
            for role in ("marketer", "reviewer")
        )
        for key in demo.NAMES:
            journey = _journey(key)
            assert (journey.status, journey.live_version, journey.created_by_id) == (
                "published", 1, marketer)  # fmt: skip
            definition = _live(key)
            assert validate(definition) == [], key
            for step in definition["steps"]:
                if step["type"] != "send":
                    continue
                version = db.session.get(ContentVersion, step["content_version_id"])
                assert (version.status, version.author_id) == ("approved", marketer)
                assert version.reviewed_by_id == reviewer
                assert version.approval_code.startswith("MLR-DEMO-")
                assert version.expires_on >= date.today() + timedelta(days=360)
        otc, rx = _live("otc_refill"), _live("rx_refill")
        assert (otc["category"], rx["category"]) == ("marketing", "service")
        for trigger in (otc["trigger"], rx["trigger"]):
            assert (trigger["event"], trigger["for_each"], trigger["entry_key"]) == (
                "pos_purchase", "items", "drug_code")  # fmt: skip
        assert otc["entry"]["max_concurrent"] == 5
        welcome = _live("welcome")
        assert welcome["trigger"] == {"type": "event", "event": "subscribe"}
        assert welcome["exit"] == [{"event": "unsubscribe"}]
        (split,) = [s for s in welcome["steps"] if s["type"] == "split"]
        assert [(p["percent"], p.get("holdout", False)) for p in split["paths"]] == [
            (90, False), (10, True)]  # fmt: skip
        hcp = _live("hcp_meeting")
        assert hcp["audience"]["kind"] == "hcp"
        # The doctors' meeting of `cdp hcp seed-demo`: the journey invites, the module awards.
        steps = {s["type"]: s for s in hcp["steps"]}
        meeting = db.session.get(Meeting, steps["invite_to_meeting"]["meeting_id"])
        assert meeting.topic == demo.MEETING_TOPIC and meeting.status == "scheduled"
        assert meeting.starts_at > utcnow() and meeting.quiz
        assert steps["wait_for_event"]["event"] == "hcp_learning_completed"
        assert "award_points" not in steps
        # The seeded consents fill the segments the journeys are for.
        for segment_id in (seeded["ids"]["health_segment"], seeded["ids"]["cardio_segment"]):
            assert db.session.get(Segment, segment_id).size > 0


def test_a_second_run_creates_nothing(app, runner, seeded):
    with app.app_context():
        before = _counts()
    assert invoke(runner, "journeys", "seed-demo", "--if-empty")["skipped"] is True
    again = invoke(runner, "journeys", "seed-demo")
    assert again["journeys"] == [] and again["ids"] == seeded["ids"]
    with app.app_context():
        assert _counts() == before


def _refill_patient(ids: dict) -> tuple[int, str, str]:
    """A demo pharmacy member with health-data and SMS consent, who has not refused
    automated marketing, holds no OTC coupon yet and is not reachable in the mini-program."""
    members = sa.select(SegmentMembership.profile_id).where(
        SegmentMembership.segment_id == ids["health_segment"], SegmentMembership.exited_at.is_(None)
    )
    holders = sa.select(Coupon.profile_id).where(Coupon.campaign_id == ids["campaign"])
    mini = sa.select(Identity.profile_id).where(Identity.type == "miniprogram_openid")
    return db.session.execute(
        sa.select(Identity.profile_id, Identity.namespace, Identity.value_index)
        .where(Identity.type == "pharmacy_member", Identity.profile_id.in_(members))
        .where(Identity.profile_id.in_(granted_profiles("marketing", "sms")))
        .where(Identity.profile_id.not_in(refused_profiles("automated_marketing")))
        .where(Identity.profile_id.not_in(holders), Identity.profile_id.not_in(mini))
        .order_by(Identity.profile_id)
        .limit(1)
    ).one()


def test_a_pos_purchase_starts_one_refill_reminder_per_medicine(app, seeded, channels):
    with app.app_context():
        profile_id, chain, card = _refill_patient(seeded["ids"])
        card_id = [{"type": "pharmacy_member", "collection": chain, "id": card}]
        codes = ("D021", "D022", "D001", "D003", "D017")  # two OTC, two chronic Rx, a 5-day OTC
        _track("src_demo_pos", card_id, "pos_purchase", items=[DRUGS[c].item(1) for c in codes])
        bought = utcnow().astimezone(SHANGHAI).date()
        otc, rx = _instances("otc_refill"), _instances("rx_refill")
        assert sorted(otc) == ["D021", "D022"] and sorted(rx) == ["D001", "D003"]
        assert {i.profile_id for i in [*otc.values(), *rx.values()]} == {profile_id}
        assert otc["D021"].context["run_out_date"] == (bought + timedelta(days=60)).isoformat()

        # D003 lasts 28 days: its notice goes out five days before, at 09:30; D001's later.
        run_once(_at(bought + timedelta(days=23), "09:31"))
        assert [c.message["data"]["thing1"]["value"] for c in channels["wechat"].calls] == [
            DRUGS["D003"].name[:20]]  # fmt: skip
        assert [d.payload["entry_key"] for d in _deliveries("rx_refill", "notice")] == ["D003"]

        # The OTC ones: notices on day 55, no purchase within a week, so a coupon each try.
        run_once(_at(bought + timedelta(days=55), "09:31"))
        assert sorted(d.payload["entry_key"] for d in _deliveries("otc_refill", "notice")) == [
            "D021", "D022"]  # fmt: skip
        run_once(_at(bought + timedelta(days=62), "10:00"))
        run_once(_at(bought + timedelta(days=62), "10:01"))  # the news waits for its coupon
        coupons = _deliveries("otc_refill", "coupon")
        assert sorted(d.status for d in coupons) == ["sent", "skipped"]  # one per person
        (coupon,) = db.session.scalars(
            sa.select(Coupon).where(Coupon.profile_id == profile_id,
                                    Coupon.campaign_id == seeded["ids"]["campaign"])
        ).all()  # fmt: skip
        # Announced by SMS (no mini-program), and never for the coupon that was not issued.
        news = {d.status: d for d in _deliveries("otc_refill", "tell_sms")}
        assert sorted(news) == ["sent", "skipped"] and news["skipped"].reason == "render_failed"
        (sms,) = channels["sms"].calls
        assert coupon.code in sms.message["text"] and "回T退订" in sms.message["text"]


def _doctor_event(licence: str, event: str, at: datetime, **props) -> None:
    ids = [{"type": "hcp_license", "id": licence}]
    _track(hcp_demo.LIVE_SOURCE_ID, ids, event, at, **props)


def test_doctors_are_invited_and_earn_cme_points_within_the_cap(app, seeded, channels, monkeypatch):
    with app.app_context():
        invite_at = datetime.fromisoformat(_live("hcp_meeting")["trigger"]["at"])
        segment = db.session.get(Segment, seeded["ids"]["cardio_segment"])
        fired = fire_due(invite_at + timedelta(minutes=1))
        assert fired[_journey("hcp_meeting").id]["entered"] == segment.size
        run_once(invite_at + timedelta(minutes=1))
        run_once(invite_at + timedelta(minutes=2))  # an instance's effects go in order
        assert len(channels["wechat"].calls) == segment.size
        invited = sa.select(JourneyInstance.profile_id).where(
            JourneyInstance.journey_id == _journey("hcp_meeting").id
        )
        members = sorted(db.session.scalars(invited))
        assert len(members) == segment.size >= 2
        meeting = db.session.get(Meeting, seeded["ids"]["meeting"])
        # Everyone is invited, once: by the journey, or earlier by their rep and the manager.
        rows = db.session.scalars(
            sa.select(Participant).where(Participant.meeting_id == meeting.id,
                                         Participant.profile_id.in_(members))
        ).all()  # fmt: skip
        assert {r.invitation for r in rows} == {"invited"} and len(rows) == len(members)
        assert "journey" in {r.invited_via for r in rows}
        right = {q["id"]: q["answer"] for q in meeting.quiz}
        # The module stamps a completion when it processes the events: at the meeting, here.
        monkeypatch.setattr(processor, "utcnow", lambda: meeting.starts_at + timedelta(minutes=66))
        for n, doctor in enumerate(members[:2]):
            if n == 1:  # the second doctor is near this year's cap already
                app.config["LOYALTY_HCP_ANNUAL_CAP"] = 40
            licence = db.session.scalar(
                sa.select(Identity.value_index).where(
                    Identity.profile_id == doctor, Identity.type == "hcp_license"
                )
            )
            start = meeting.starts_at
            _doctor_event(licence, "hcp_meeting_joined", start, meeting_id=meeting.id)
            _doctor_event(licence, "hcp_meeting_left", start + timedelta(minutes=60),
                          meeting_id=meeting.id)  # fmt: skip
            _doctor_event(licence, "hcp_quiz_submitted", start + timedelta(minutes=65),
                          meeting_id=meeting.id, answers=right)  # fmt: skip
        process_pending()  # the module's completion events reach the journey
        run_once(meeting.starts_at + timedelta(minutes=70))
        first, second = (
            db.session.scalar(
                sa.select(Award).where(Award.meeting_id == meeting.id, Award.profile_id == doctor)
            )
            for doctor in members[:2]
        )
        assert (first.status, first.points) == ("awarded", 50)
        assert first.content_version_id == meeting.content_version_id
        assert (second.status, second.points) == ("refused", 0)
        assert second.reason.startswith("annual_cap")
        refused = db.session.scalar(
            sa.select(AuditEntry).where(AuditEntry.action == "hcp.points_refused",
                                        AuditEntry.object_id == str(members[1]))
        )  # fmt: skip
        assert refused.details["meeting_id"] == meeting.id
        # Both completed the learning: the journey saw it, whatever became of the points.
        db.session.expire_all()
        states = dict(
            db.session.execute(
                sa.select(JourneyInstance.profile_id, JourneyInstance.state).where(
                    JourneyInstance.journey_id == _journey("hcp_meeting").id
                )
            ).all()
        )
        assert {states[d] for d in members[:2]} == {"completed"}
        assert {states[d] for d in members[2:]} == {"waiting"}


def test_a_new_follower_gets_the_welcome_message(app, seeded, channels):
    with app.app_context():
        ids = [{"type": "wechat_openid", "collection": vocab.WECHAT_OA_APP_ID,
                "id": "oNewFollower0000000000000001"}]  # fmt: skip
        _track("src_demo_wechat", ids, "subscribe")
        (instance,) = _instances("welcome").values()
        run_once(utcnow() + timedelta(minutes=61))
        (call,) = channels["wechat"].calls
        assert call.message["template_id"] == vocab.JOURNEY_TEMPLATES["welcome"][0]
        db.session.expire_all()
        assert db.session.get(JourneyInstance, instance.id).step_id in ("two_days", None)
