"""Weak dimensions drive journeys: the knowledge condition and the invite_to_meeting step."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from cdp.actors import SYSTEM
from cdp.content import operations as ops
from cdp.db import db
from cdp.hcp import meetings
from cdp.ingest.tasks import process_pending
from cdp.models.hcp import KnowledgeScore, Participant
from cdp.sources import create_source
from journeys.channels import CHANNELS
from journeys.validation import validate
from segments import service as segment_service
from segments.compiler import compile_query
from segments.membership import make_context
from segments.reference import reference_members
from tests.journey_helpers import (
    RecordingSms,
    deliveries,
    grant,
    instances,
    later,
    person,
    publish,
    run,
)
from tests.test_content import approved, sms_fields
from tests.test_hcp_engagement import RIGHT, Clinic
from tests.test_segments_membership import refresh

ARTICLE_SMS = "【康护】新版《康糖片用药指导》已上线，点击学习。回T退订"
WEAK_ON_USAGE = {"rule": {"type": "knowledge", "dimension": "product_usage", "weak": True}}
# Right on diagnosis and brand choice only: product usage 0.
WEAK_ANSWERS = {"q1": 1, "q2": 1, "q3": 2, "q4": [0, 2]}


@pytest.fixture
def clinic(app_ctx):
    return Clinic(app_ctx)


@pytest.fixture(autouse=True)
def sms(app, monkeypatch):
    RecordingSms.calls, RecordingSms.fail_with = [], None
    monkeypatch.setitem(CHANNELS, "sms", RecordingSms)
    app.config["JOURNEY_GLOBAL_CONTROL_PERCENT"] = 0
    app.config["JOURNEY_QUIET_HOURS"] = ("00:00", "00:00")
    return RecordingSms


def usage_article(clinic):
    return approved(
        clinic.team, name="用药指导文章", code="MLR-HCP-2",
        **sms_fields(text=ARTICLE_SMS, audience="hcp", product_class="rx",
                     category="marketing", products=["KT-001"]),
    )  # fmt: skip


def journey(segment_id: int, content, meeting_id: int) -> dict:
    return {
        "audience": {"kind": "hcp"},
        "trigger": {"type": "segment_entry", "segment_id": segment_id},
        "start": "article",
        "steps": [
            {"id": "article", "type": "send", "channel": "sms", "content_id": content.item_id,
             "content_version_id": content.id, "next": "invite"},
            {"id": "invite", "type": "invite_to_meeting", "meeting_id": meeting_id,
             "next": "end"},
            {"id": "end", "type": "exit"},
        ],
    }  # fmt: skip


def test_knowledge_rules_in_sql_agree_with_the_reference(clinic):
    meeting = clinic.meeting()
    for name, answers in (("a", WEAK_ANSWERS), ("b", RIGHT), ("c", {"q1": 0, "q2": 1})):
        clinic.doctor(name)
        clinic.quiz(name, meeting.id, answers)
    clinic.doctor("never")
    rules = [
        WEAK_ON_USAGE["rule"],
        {"type": "knowledge", "dimension": "product_usage", "op": "lt", "value": 60},
        {"type": "knowledge", "dimension": "product_usage", "op": "between", "value": [40, 60]},
        {"type": "knowledge", "dimension": "diagnosis", "op": "gte", "value": 100},
        {"not": WEAK_ON_USAGE["rule"]},
    ]
    ctx = make_context(datetime.now(UTC))
    for rule in rules:
        sql = set(db.session.scalars(compile_query({"rule": rule}, ctx)))
        assert sql == reference_members({"rule": rule}, ctx), rule
    weak = set(db.session.scalars(compile_query(WEAK_ON_USAGE, ctx)))
    scores = dict(
        db.session.execute(
            sa.select(KnowledgeScore.profile_id, KnowledgeScore.score).where(
                KnowledgeScore.dimension == "product_usage"
            )
        ).all()
    )
    assert weak == {pid for pid, score in scores.items() if score < 60} and len(weak) == 2


def test_weak_on_product_usage_drives_a_journey_sending_only_approved_hcp_content(clinic, sms):
    lesson, next_meeting = clinic.meeting(), clinic.meeting(topic="用药答疑会")
    article = usage_article(clinic)
    people = {name: clinic.doctor(name) for name in ("weak", "strong", "never")}
    patient_source = create_source(SYSTEM, "患者小程序", "http")[0]
    patient = person(patient_source, "patient")
    for profile_id in (*people.values(), patient):
        grant(profile_id)
    segment = segment_service.create_segment(SYSTEM, "产品用法薄弱的医生", WEAK_ON_USAGE)
    refresh(segment)
    published = publish(journey(segment.id, article, next_meeting.id))
    assert validate(published.draft) == []
    clinic.quiz("weak", lesson.id, WEAK_ANSWERS)
    clinic.quiz("strong", lesson.id, RIGHT)
    process_pending()  # the segment's entry events reach the journey
    assert [i.profile_id for i in instances(published.id)] == [people["weak"]]
    run()
    sent = deliveries(action="send", status="sent")
    assert [d.profile_id for d in sent] == [people["weak"]]
    assert [d.content_version_id for d in sent] == [article.id]
    assert [c.message["text"] for c in sms.calls] == [ARTICLE_SMS]
    run(later(seconds=5))  # effects of an instance go in order: the invitation comes next
    invited = db.session.scalars(sa.select(Participant).where(Participant.invitation == "invited"))
    assert [(p.profile_id, p.meeting_id, p.invited_via) for p in invited] == [
        (people["weak"], next_meeting.id, "journey")
    ]
    run(later(seconds=10))  # again: nothing sent or invited twice
    assert len(sms.calls) == 1 and len(deliveries(action="invite_to_meeting")) == 1


def test_a_withdrawn_article_is_not_sent_even_to_a_weak_doctor(clinic, sms):
    lesson = clinic.meeting()
    article = usage_article(clinic)
    weak = clinic.doctor("weak")
    grant(weak)
    segment = segment_service.create_segment(SYSTEM, "产品用法薄弱", WEAK_ON_USAGE)
    refresh(segment)
    published = publish(journey(segment.id, article, lesson.id))
    clinic.quiz("weak", lesson.id, WEAK_ANSWERS)
    process_pending()
    ops.withdraw(clinic.team.reviewer, article.id, "说明书更新")
    run()
    (skipped,) = deliveries(action="send")
    assert (skipped.status, skipped.reason) == ("skipped", "withdrawn")
    assert sms.calls == [] and instances(published.id)[0].profile_id == weak


def test_journeys_refuse_patient_content_and_unknown_or_closed_meetings(clinic):
    meeting = clinic.meeting()
    for_patients = approved(clinic.team, name="患者短信", code="MLR-P-2")
    segment = segment_service.create_segment(SYSTEM, "薄弱", WEAK_ON_USAGE)
    definition = journey(segment.id, for_patients, meeting.id)
    codes = {p["code"] for p in validate(definition)}
    assert "audience_mismatch" in codes
    definition = journey(segment.id, usage_article(clinic), 999999)
    assert [p["code"] for p in validate(definition)] == ["unknown_meeting"]
    meetings.cancel_meeting(clinic.team.marketer, meeting.id)
    definition = journey(segment.id, usage_article(clinic), meeting.id)
    problems = validate({**definition, "audience": {"kind": "patient"}})
    assert {p["code"] for p in problems} >= {"meeting_closed", "meeting_needs_hcp"}
