"""Doctor engagement: quizzes per dimension, attendance, academic points, the funnel, tiers."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from cdp.actors import SYSTEM, Actor
from cdp.content import operations as ops
from cdp.db import db, utcnow
from cdp.exceptions import Conflict, PermissionDenied, ValidationFailed
from cdp.hcp import academic, doctors, meetings, quizzes, reports
from cdp.hcp.learning import watched
from cdp.ingest.pipeline import ingest
from cdp.ingest.tasks import process_batch, process_pending
from cdp.loyalty import ledger
from cdp.models import AuditEntry, Event, Identity, Profile
from cdp.models.hcp import (
    Award,
    KnowledgeChange,
    KnowledgeScore,
    Meeting,
    Participant,
    QuizSubmission,
)
from cdp.models.loyalty import PointEntry
from cdp.privacy import erasure
from cdp.sources import create_source, get_source
from tests.conftest import make_user
from tests.journey_helpers import profile_of
from tests.test_content import Team, approved, sms_fields

HCP_SMS = "【康护】{{ profile.name }}医生您好：新版用药指导已上线，欢迎学习。回T退订"
QUIZ = [
    {"id": "q1", "text": "起始剂量？", "options": ["5 mg", "10 mg"], "answer": [0],
     "dimensions": ["product_usage"]},
    {"id": "q2", "text": "肾功能不全时？", "options": ["减量", "不变"], "answer": 0,
     "dimensions": ["product_usage", "diagnosis"]},
    {"id": "q3", "text": "诊断标准？", "options": ["A", "B", "C"], "answer": [2],
     "dimensions": ["diagnosis"], "weight": 2},
    {"id": "q4", "text": "同类药物中？", "options": ["甲", "乙", "丙"], "answer": [0, 2],
     "dimensions": ["brand_choice"]},
]  # fmt: skip


class Clinic:
    """A marketing team, a rep and their manager, a doctors' mini-program, HCP content."""

    def __init__(self, app):
        self.team = Team(app)
        self.rep = Actor(kind="user", user_id=make_user(app, "rep", "rep@test.cn"), role="rep")
        self.manager = Actor(
            kind="user", user_id=make_user(app, "manager", "manager@test.cn"), role="manager"
        )
        self.source_id = create_source(SYSTEM, "医生小程序", "http", default_profile_kind="hcp")[
            0
        ].id
        self.content = approved(
            self.team, name="用药指导", code="MLR-HCP-1",
            **sms_fields(text=HCP_SMS, audience="hcp", product_class="rx", category="marketing",
                         products=["KT-001"]),
        )  # fmt: skip
        # Ids, not ORM objects: web tests use the clinic across app contexts.
        self.content_id, self.content_item_id = self.content.id, self.content.item_id
        self.licences = iter(range(110000000000001, 110000000000999))

    @property
    def source(self):
        return get_source(self.source_id)

    def doctor(self, user_id: str, verified: bool = True, rep: bool = True, **traits) -> int:
        result = ingest(self.source, [{"type": "identify", "userId": user_id, "traits": traits}])
        process_batch(result.outbox_id)
        profile_id = profile_of(user_id)
        if rep:
            doctors.assign_rep(self.manager, profile_id, self.rep.user_id)
        doctors.set_licence(self.team.admin, profile_id, str(next(self.licences)))
        if verified:
            doctors.verify(self.team.admin, profile_id, "licence_check")
        return profile_id

    def meeting(self, quiz=QUIZ, **fields) -> Meeting:
        now = utcnow()
        data = {"topic": "糖尿病科室会", "product": "康糖片", "therapeutic_area": "糖尿病",
                "campaign": "2026 Q3 用药教育", "speaker_name": "王主任",
                "starts_at": now - timedelta(hours=1), "ends_at": now + timedelta(hours=1),
                "content_version_id": self.content_id, "min_minutes": 30, **fields}  # fmt: skip
        meeting = meetings.create_meeting(self.team.marketer, data)
        if quiz:
            quizzes.set_quiz(self.team.marketer, meeting.id, quiz)
        return meeting

    def send(self, user_id: str, event: str, minutes_ago: float = 0, process=True, **props):
        at = utcnow() - timedelta(minutes=minutes_ago)
        message = {"type": "track", "userId": user_id, "event": event,
                   "timestamp": at.isoformat(), "properties": props}  # fmt: skip
        result = ingest(self.source, [message])
        if process:
            process_batch(result.outbox_id)
        return result

    def attend(self, user_id: str, meeting_id: int, minutes: int, ago: int = 50):
        self.send(user_id, "hcp_meeting_joined", ago, meeting_id=meeting_id)
        self.send(user_id, "hcp_meeting_left", ago - minutes, meeting_id=meeting_id)

    def quiz(self, user_id: str, meeting_id: int, answers: dict):
        self.send(user_id, "hcp_quiz_submitted", 1, meeting_id=meeting_id, answers=answers)


@pytest.fixture
def clinic(app_ctx):
    return Clinic(app_ctx)


RIGHT = {"q1": 0, "q2": 0, "q3": 2, "q4": [2, 0]}


def audit_rows(action: str) -> list[AuditEntry]:
    return list(db.session.scalars(sa.select(AuditEntry).where(AuditEntry.action == action)))


def test_a_quiz_is_scored_per_dimension_and_moves_the_running_knowledge_profile(clinic):
    doctor = clinic.doctor("d1")
    first, second = clinic.meeting(), clinic.meeting(topic="第二场")
    # q1 right; q2 wrong (product usage + diagnosis); q3 right (weight 2); q4 only half of
    # a multiple choice: wrong.
    clinic.quiz("d1", first.id, {"q1": 0, "q2": 1, "q3": 2, "q4": [0]})
    submission = db.session.scalar(sa.select(QuizSubmission))
    assert submission.scores == {"product_usage": 50.0, "diagnosis": 66.7, "brand_choice": 0.0}
    assert (submission.correct, submission.total) == (2, 4)
    # A second submission for the same meeting does not count.
    clinic.quiz("d1", first.id, RIGHT)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(QuizSubmission)) == 1
    # The next meeting's quiz moves the running score halfway (HCP_KNOWLEDGE_WEIGHT 0.5).
    clinic.quiz("d1", second.id, RIGHT)
    scores = {
        k.dimension: k.score
        for k in db.session.scalars(sa.select(KnowledgeScore).where(KnowledgeScore.profile_id == doctor))
    }  # fmt: skip
    assert scores == {"product_usage": 75.0, "diagnosis": 83.3, "brand_choice": 50.0}
    history = db.session.scalars(
        sa.select(KnowledgeChange)
        .where(KnowledgeChange.dimension == "product_usage")
        .order_by(KnowledgeChange.id)
    ).all()
    assert [(h.score_before, h.quiz_score, h.score_after) for h in history] == [
        (None, 50.0, 50.0),
        (50.0, 100.0, 75.0),
    ]
    report = {k["dimension"]: k for k in reports.knowledge(doctor)}
    assert report["treatment"]["score"] is None and not report["treatment"]["weak"]
    assert report["brand_choice"]["weak"] and not report["product_usage"]["weak"]


def test_quiz_questions_need_known_dimensions_and_valid_answers(clinic):
    meeting = clinic.meeting(quiz=None)
    bad = [{**QUIZ[0], "dimensions": ["pricing"]}]
    with pytest.raises(ValidationFailed) as problem:
        quizzes.set_quiz(clinic.team.marketer, meeting.id, bad)
    assert problem.value.field == "quiz.0.dimensions"
    with pytest.raises(ValidationFailed):
        quizzes.set_quiz(clinic.team.marketer, meeting.id, [{**QUIZ[0], "answer": [5]}])
    quizzes.set_quiz(clinic.team.marketer, meeting.id, QUIZ)
    doctor = clinic.doctor("d1")
    with pytest.raises(ValidationFailed):
        quizzes.submit_quiz(clinic.team.marketer, meeting.id, doctor, {"q9": 0})
    quizzes.submit_quiz(clinic.team.marketer, meeting.id, doctor, RIGHT)
    with pytest.raises(Conflict):  # answered: the quiz is frozen
        quizzes.set_quiz(clinic.team.marketer, meeting.id, QUIZ[:2])


def test_minutes_watched_count_overlapping_devices_once_and_close_with_the_meeting():
    start = utcnow() - timedelta(hours=2)
    meeting = Meeting(starts_at=start, ends_at=start + timedelta(minutes=90))

    def at(minutes):
        return start + timedelta(minutes=minutes)

    marks = [
        (at(-10), "hcp_meeting_joined"),  # early: counted from the start
        (at(20), "hcp_meeting_joined"),  # a second device
        (at(30), "hcp_meeting_left"),
        (at(40), "hcp_meeting_left"),
        (at(45), "hcp_meeting_left"),  # a leave without a join tells nothing
        (at(70), "hcp_meeting_joined"),  # still in when the stream ended at 90
    ]
    seconds, first = watched(meeting, marks, utcnow())
    assert (seconds, first) == ((40 + 20) * 60, at(-10))


def test_completed_learning_earns_points_that_name_the_meeting_and_content(clinic):
    clinic.doctor("d1")
    doctor = profile_of("d1")
    meeting = clinic.meeting()
    clinic.attend("d1", meeting.id, minutes=20)
    clinic.quiz("d1", meeting.id, RIGHT)
    assert db.session.scalar(sa.select(Award)) is None  # 20 of 30 minutes: not complete
    clinic.attend("d1", meeting.id, minutes=15, ago=25)
    award = db.session.scalar(sa.select(Award))
    assert (award.status, award.points) == ("awarded", 50)
    assert (award.meeting_id, award.content_version_id) == (meeting.id, clinic.content.id)
    assert ledger.balance(doctor) == 50
    entry = db.session.get(PointEntry, award.points_entry_id)
    assert entry.rule == "action:cme_module_completed"
    details = audit_rows("hcp.points_awarded")[0].details
    assert details["meeting_id"] == meeting.id
    assert details["content_version_id"] == clinic.content.id
    # Replaying every event again awards nothing twice.
    clinic.attend("d1", meeting.id, minutes=15, ago=25)
    assert ledger.balance(doctor) == 50
    completed = db.session.scalars(
        sa.select(Event.properties).where(Event.name == "hcp_learning_completed")
    ).all()
    assert [(c["meeting_id"], c["minutes"]) for c in completed] == [(meeting.id, 35)]


def test_points_over_the_annual_cap_are_refused_and_audited(clinic, app):
    app.config["LOYALTY_HCP_ANNUAL_CAP"] = 60
    doctor = clinic.doctor("d1")
    first, second = clinic.meeting(), clinic.meeting(topic="第二场")
    for meeting in (first, second):
        clinic.attend("d1", meeting.id, minutes=40)
        clinic.quiz("d1", meeting.id, RIGHT)
    awards = {a.meeting_id: a for a in db.session.scalars(sa.select(Award))}
    assert awards[first.id].status == "awarded"
    assert awards[second.id].status == "refused"
    assert awards[second.id].reason.startswith("annual_cap")
    assert awards[second.id].content_version_id == clinic.content.id
    assert ledger.balance(doctor) == 50
    refused = audit_rows("hcp.points_refused")
    assert [(r.outcome, r.details["reason"], r.details["meeting_id"]) for r in refused] == [
        ("refused", "annual_cap", second.id)
    ]
    assert audit_rows("points.hcp_cap_refused")[0].details["cap"] == 60
    with pytest.raises(Conflict):  # asking again is refused again
        academic.award_completion(clinic.team.admin, second.id, doctor)


def test_points_are_impossible_for_a_doctor_who_is_not_verified(clinic):
    doctor = clinic.doctor("d1", verified=False)
    meeting = clinic.meeting()
    clinic.attend("d1", meeting.id, minutes=40)
    clinic.quiz("d1", meeting.id, RIGHT)
    award = db.session.scalar(sa.select(Award))
    assert (award.status, award.reason.split(":")[0]) == ("refused", "not_verified")
    assert ledger.balance(doctor) == 0
    assert db.session.scalar(sa.select(sa.func.count()).select_from(PointEntry)) == 0
    for actor in (clinic.team.admin, clinic.manager):
        with pytest.raises(PermissionDenied):
            academic.award_completion(actor, meeting.id, doctor)
    assert len(audit_rows("hcp.points_refused")) == 3
    # Once verified, the completed meeting can be awarded.
    doctors.verify(clinic.rep, doctor, "rep")
    assert academic.award_completion(clinic.manager, meeting.id, doctor).status == "awarded"
    assert ledger.balance(doctor) == 50


def test_points_are_spent_only_on_approved_academic_items(clinic):
    doctor = clinic.doctor("d1")
    meeting = clinic.meeting()
    clinic.attend("d1", meeting.id, minutes=40)
    clinic.quiz("d1", meeting.id, RIGHT)
    item = academic.create_item(clinic.rep, "BOOK-1", "《内分泌学》", "book", 30)
    with pytest.raises(ValidationFailed):
        academic.redeem(clinic.rep, doctor, item.id, "r1")
    with pytest.raises(PermissionDenied):
        academic.set_item_status(clinic.rep, item.id, "approved")
    academic.set_item_status(clinic.manager, item.id, "approved")
    redemption = academic.redeem(clinic.rep, doctor, item.id, "r1")
    assert academic.redeem(clinic.rep, doctor, item.id, "r1").id == redemption.id
    assert ledger.balance(doctor) == 20
    with pytest.raises(Conflict):  # 20 left
        academic.redeem(clinic.rep, doctor, item.id, "r2")


def test_the_meeting_funnel_reconciles_with_raw_events(clinic):
    meeting = clinic.meeting()
    ids = {name: clinic.doctor(name) for name in ("d1", "d2", "d3", "d4")}
    # Invitations: two asked for by the rep and approved by the manager, one by the manager.
    rows = meetings.request_invitations(clinic.rep, meeting.id, [ids["d1"], ids["d2"]])
    assert {r.invitation for r in rows} == {"requested"}
    for row in rows:
        meetings.decide(clinic.manager, row.id, approve=True)
    meetings.request_invitations(clinic.manager, meeting.id, [ids["d3"]])
    for name in ("d1", "d2", "d4"):  # d4 registers without an invitation
        clinic.send(name, "hcp_meeting_registered", 55, meeting_id=meeting.id)
    clinic.attend("d1", meeting.id, minutes=45)
    clinic.attend("d2", meeting.id, minutes=10)  # too short
    clinic.attend("d4", meeting.id, minutes=35)
    clinic.quiz("d1", meeting.id, RIGHT)
    clinic.quiz("d2", meeting.id, RIGHT)
    process_pending()
    report = reports.meeting_report(clinic.manager, meeting.id)
    stages = {s["stage"]: (s["recorded"], s["raw"]) for s in report["stages"]}
    assert stages == {
        "invited": (3, 3),
        "registered": (3, 3),
        "joined": (3, 3),
        "attended": (2, 2),
        "quiz": (2, 2),
        "points": (1, 1),
    }
    assert report["reconciled"]
    # An ingested batch not processed yet shows as a difference, until it is processed.
    pending = clinic.send("d4", "hcp_quiz_submitted", 1, process=False, meeting_id=meeting.id,
                          answers=RIGHT)  # fmt: skip
    report = reports.meeting_report(clinic.manager, meeting.id)
    assert not report["reconciled"]
    assert [s["stage"] for s in report["stages"] if not s["reconciled"]] == ["quiz"]
    process_batch(pending.outbox_id)
    process_pending()
    report = reports.meeting_report(clinic.manager, meeting.id)
    assert report["reconciled"]
    assert {s["stage"]: s["recorded"] for s in report["stages"]}["points"] == 2


def test_a_rep_requests_invitations_for_their_own_doctors_and_a_manager_decides(clinic):
    meeting = clinic.meeting()
    mine = clinic.doctor("d1")
    other = clinic.doctor("d2", rep=False)
    with pytest.raises(PermissionDenied):
        meetings.request_invitations(clinic.rep, meeting.id, [other])
    (row,) = meetings.request_invitations(clinic.rep, meeting.id, [mine], note="对新品感兴趣")
    with pytest.raises(PermissionDenied):
        meetings.decide(clinic.rep, row.id, approve=True)
    assert [p.id for p, _ in meetings.pending_requests(clinic.manager)] == [row.id]
    meetings.decide(clinic.manager, row.id, approve=False, note="名额已满")
    assert row.invitation == "rejected"
    with pytest.raises(Conflict):
        meetings.decide(clinic.manager, row.id, approve=True)
    # Asked again, approved this time.
    (row,) = meetings.request_invitations(clinic.rep, meeting.id, [mine])
    meetings.decide(clinic.manager, row.id, approve=True)
    assert (row.invitation, row.invited_via, row.decided_by_id) == (
        "invited", "rep", clinic.manager.user_id
    )  # fmt: skip
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Participant)) == 1


def test_meetings_use_approved_hcp_content_only(clinic):
    draft = ops.create_item(clinic.team.marketer, "草稿", "sms", **sms_fields(audience="hcp"))
    patients = approved(clinic.team, name="患者短信", code="MLR-P-1")
    for version_id in (draft.id, patients.id, 999999):
        with pytest.raises(ValidationFailed) as problem:
            clinic.meeting(content_version_id=version_id)
        assert problem.value.field == "content_version_id"
    meeting = clinic.meeting(content_version_id=None, content_id=clinic.content.item_id)
    assert meeting.content_version_id == clinic.content.id
    ops.withdraw(clinic.team.reviewer, clinic.content.id, "更新中")
    with pytest.raises(ValidationFailed):
        meetings.update_meeting(clinic.team.marketer, meeting.id,
                                {"content_version_id": clinic.content.id})  # fmt: skip


def test_tiers_follow_the_rules_and_a_manager_override_is_audited(clinic):
    doctor = clinic.doctor("d1", title="主任医师", hospital="瑞金医院")
    row = doctors.get_doctor(clinic.rep, doctor)
    assert (row.title, row.hospital, row.tier) == ("主任医师", "瑞金医院", "general")
    doctors.update_doctor(clinic.rep, doctor, society_role="national")
    assert row.tier == "national_kol" and row.tier_rule == 0
    with pytest.raises(PermissionDenied):
        doctors.override_tier(clinic.rep, doctor, "general", "不再活跃")
    doctors.override_tier(clinic.manager, doctor, "regional_kol", "学会任期结束")
    assert (row.tier, row.effective_tier) == ("national_kol", "regional_kol")
    entry = audit_rows("hcp.tier_override")[0]
    assert entry.details["before"] == "national_kol" and entry.details["after"] == "regional_kol"
    traits = db.session.get(Profile, doctor).traits
    assert (traits["hcp_tier"], traits["title"], traits["hcp_verified"]) == (
        "regional_kol", "主任医师", True
    )  # fmt: skip


def test_licence_numbers_are_unique_and_a_check_needs_one(clinic):
    first = clinic.doctor("d1")
    ingest(clinic.source, [{"type": "identify", "userId": "d2"}])
    second = profile_of("d2")
    licence = db.session.scalar(
        sa.select(Identity.value_index).where(
            Identity.type == "hcp_license", Identity.profile_id == first
        )
    )
    with pytest.raises(Conflict):
        doctors.set_licence(clinic.team.admin, second, licence)
    with pytest.raises(ValidationFailed):
        doctors.set_licence(clinic.team.admin, second, "12345")
    with pytest.raises(Conflict):  # no licence number: nothing to check
        doctors.verify(clinic.team.admin, second, "licence_check")
    with pytest.raises(Conflict):  # no rep to attest
        doctors.verify(clinic.team.admin, second, "rep")
    doctors.revoke_verification(clinic.manager, first, "执业证书已注销")
    assert doctors.get_doctor(clinic.manager, first).verification == "unverified"


def test_erasing_a_speaker_keeps_the_meeting_and_everyone_elses_record(clinic):
    speaker, attendee = clinic.doctor("speaker"), clinic.doctor("attendee")
    meeting = clinic.meeting(speaker_profile_id=speaker)
    for name in ("speaker", "attendee"):
        clinic.attend(name, meeting.id, minutes=40)
        clinic.quiz(name, meeting.id, RIGHT)
    assert erasure.run_erasure(erasure.request_erasure(SYSTEM, speaker).id) == "completed"
    db.session.expire_all()
    kept = db.session.get(Meeting, meeting.id)
    assert (kept.speaker_profile_id, kept.speaker_name) == (None, "")
    left = db.session.scalars(sa.select(Participant.profile_id)).all()
    assert left == [attendee]
    assert db.session.scalars(sa.select(Award.profile_id)).all() == [attendee]
    assert reports.meeting_report(clinic.manager, meeting.id)["reconciled"]
