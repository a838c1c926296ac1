"""`cdp hcp seed-demo`: the Doctors area has demo data, and its reports show real numbers."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa

from cdp.actors import SYSTEM, Actor
from cdp.auth.accounts import authenticate
from cdp.db import db, utcnow
from cdp.hcp import meetings, progress, reports
from cdp.hcp.settings import DEFAULTS as HCP
from cdp.loyalty.common import DEFAULTS as LOYALTY
from cdp.models import Event, Profile, User
from cdp.models.content import ContentVersion
from cdp.models.hcp import Award, HcpProfile, KnowledgeScore, Meeting, Participant, Redemption
from cdp.seed import vocab
from segments.compiler import compile_query
from segments.membership import make_context

FIELD_FORCE = [(email, role) for email, role, _ in vocab.DEMO_USERS if role in ("rep", "manager")]


def invoke(runner, *args, code: int = 0) -> dict | str:
    result = runner.invoke(args=[*args, "--json"] if code == 0 else list(args))
    assert result.exit_code == code, result.output
    return orjson.loads(result.stdout) if code == 0 else result.output


@pytest.fixture
def seeded(app, runner) -> dict:
    invoke(runner, "seed-demo", "--patients", "20", "--doctors", "120")
    return invoke(runner, "hcp", "seed-demo")


def _user(role: str) -> Actor:
    user = db.session.scalar(sa.select(User).where(User.role == role).order_by(User.id))
    return Actor(kind="user", user_id=user.id, role=role)


def _meetings() -> list[Meeting]:
    return list(db.session.scalars(sa.select(Meeting).order_by(Meeting.starts_at)))


def test_demo_doctors_get_master_data_reps_and_verification(app, seeded):
    stored = orjson.loads((Path(app.instance_path) / "demo-admin.txt").read_bytes())
    with app.app_context():
        for email, role in FIELD_FORCE:  # the reps and the manager log in like the others
            assert authenticate(SYSTEM, email, stored[email]).role == role
        people = db.session.execute(
            sa.select(Profile, HcpProfile).outerjoin(HcpProfile).where(Profile.kind == "hcp")
        ).all()
        assert len(people) == seeded["doctors"] == 120
        reps = {u.id for u in db.session.scalars(sa.select(User).where(User.role == "rep"))}
        owned = 0
        for profile, row in people:
            assert row.hospital and row.department and row.title in dict(vocab.TITLES)
            assert row.city_tier in (1, 2, 3, 4)
            owned += row.rep_id in reps
            # The generator's verified doctors were attested by their rep (or licence-checked).
            verified = profile.traits["verification"] == "verified"
            assert (row.verification == "verified") == verified == profile.traits["hcp_verified"]
            if verified:
                assert row.verification_method == ("rep" if row.rep_id else "licence_check")
        assert owned >= 0.8 * len(people) and seeded["verified"] > len(people) / 2


def test_past_meetings_reconcile_with_raw_events_and_award_points_within_the_cap(app, seeded):
    with app.app_context():
        *past, upcoming = _meetings()
        assert len(past) == 3 and upcoming.starts_at > utcnow()
        reviewer = _user("reviewer").user_id
        for meeting in (*past, upcoming):
            version = db.session.get(ContentVersion, meeting.content_version_id)
            assert (version.status, version.audience, version.reviewed_by_id) == (
                "approved", "hcp", reviewer)  # fmt: skip
            tags = {d for q in meeting.quiz for d in q["dimensions"]}
            assert tags <= set(HCP["HCP_KNOWLEDGE_DIMENSIONS"]) and len(tags) >= 4
        for meeting in past:
            assert meeting.ends_at < utcnow()
            report = reports.meeting_report(SYSTEM, meeting.id)
            assert report["reconciled"], report["stages"]
            counts = {s["stage"]: s["recorded"] for s in report["stages"]}
            assert counts["invited"] >= counts["joined"] >= counts["attended"] > 0
            assert counts["quiz"] > 0 and counts["points"] > 0
            # Invitations were asked for and decided before the meeting, never self-approved.
            rows = db.session.scalars(
                sa.select(Participant).where(
                    Participant.meeting_id == meeting.id, Participant.invitation == "invited"
                )
            ).all()
            assert all(r.invited_at < meeting.starts_at for r in rows)
            assert {r.invited_via for r in rows} >= {"rep"}
            assert all(r.decided_by_id != r.requested_by_id for r in rows if r.invited_via == "rep")
        awards = db.session.execute(sa.select(Award, HcpProfile).join(
            HcpProfile, HcpProfile.profile_id == Award.profile_id)).all()  # fmt: skip
        assert {a.status for a, _ in awards} == {"awarded", "refused"}
        for award, row in awards:
            meeting = db.session.get(Meeting, award.meeting_id)
            assert award.content_version_id == meeting.content_version_id
            if award.status == "awarded":
                assert row.verification == "verified" and award.points == 50
            else:  # only unverified doctors go without: the demo stays far below the cap
                assert row.verification == "unverified" and award.reason.startswith("not_verif")
        cap = LOYALTY["LOYALTY_HCP_ANNUAL_CAP"]
        for award, _row in awards:
            points = reports.doctor_report(SYSTEM, award.profile_id)["points"]
            assert 0 <= points["awarded_this_year"] <= cap == points["annual_cap"]
            spent = db.session.scalar(
                sa.select(sa.func.coalesce(sa.func.sum(Redemption.points), 0)).where(
                    Redemption.profile_id == award.profile_id
                )
            )
            assert points["balance"] == points["awarded_this_year"] - spent
        assert seeded["redeemed"] > 0


def test_knowledge_radar_campaign_and_rep_reports_have_numbers(app, seeded):
    with app.app_context():
        assessed = db.session.scalars(sa.select(KnowledgeScore.profile_id).distinct()).all()
        assert assessed
        radar = reports.doctor_report(SYSTEM, assessed[0])["knowledge"]
        assert any(axis["score"] is not None for axis in radar)
        weak = {"rule": {"type": "knowledge", "dimension": "product_usage", "weak": True}}
        assert set(db.session.scalars(compile_query(weak, make_context(datetime.now(UTC)))))
        campaign = _meetings()[0].campaign
        report = progress.campaign_report(SYSTEM, campaign)
        assert report["meetings"] == 3 and report["doctors"] > 0
        assert sum(d["improved"] for d in report["dimensions"].values()) > 0
        lines = progress.rep_report(SYSTEM)
        assert len(lines) == 2 and all(line["doctors"] and line["covered"] for line in lines)


def test_the_upcoming_meeting_waits_for_the_managers_decisions(app, seeded):
    with app.app_context():
        upcoming = _meetings()[-1]
        assert meetings.open_for_invitations(upcoming) is None
        queue = meetings.pending_requests(_user("manager"))
        assert queue and {m.id for _p, m in queue} == {upcoming.id}
        reps = {u.id for u in db.session.scalars(sa.select(User).where(User.role == "rep"))}
        assert {p.requested_by_id for p, _m in queue} <= reps
        registered = db.session.scalar(
            sa.select(sa.func.count()).where(
                Participant.meeting_id == upcoming.id, Participant.registered_at.is_not(None)
            )
        )
        assert registered > 0


def test_a_second_run_changes_nothing(app, runner, seeded):
    with app.app_context():
        before = [db.session.scalar(sa.select(sa.func.count()).select_from(m))
                  for m in (Meeting, Participant, Event, Award)]  # fmt: skip
    assert invoke(runner, "hcp", "seed-demo", "--if-empty")["skipped"] is True
    assert "the demo meetings exist already" in invoke(runner, "hcp", "seed-demo", code=2)
    with app.app_context():
        after = [db.session.scalar(sa.select(sa.func.count()).select_from(m))
                 for m in (Meeting, Participant, Event, Award)]  # fmt: skip
    assert after == before


def test_it_asks_for_the_demo_doctors_first(app, runner):
    invoke(runner, "seed-demo", "--patients", "5", "--doctors", "0")
    output = invoke(runner, "hcp", "seed-demo", code=2)
    assert "run `cdp seed-demo` first" in output
