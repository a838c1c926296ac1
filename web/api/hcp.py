"""/api/v1/hcp: doctors' master data, meetings, quizzes, invitations, academic points, reports.

Reps see and change their own doctors only; approvals (invitation requests, tier overrides,
rep assignment, catalogue items) need ``hcp:approve``. docs/hcp.md describes the flows.
"""

from __future__ import annotations

from flask.views import MethodView

from cdp.hcp import academic, doctors, learning, meetings, progress, quizzes, reports
from web.api.auth import api_blueprint, api_requires
from web.api.hcp_schemas import (
    HcpCampaignArgsSchema,
    HcpDecisionSchema,
    HcpDoctorListArgsSchema,
    HcpDoctorUpdateSchema,
    HcpInvitationSchema,
    HcpItemSchema,
    HcpItemStatusSchema,
    HcpLicenceSchema,
    HcpMeetingCreateSchema,
    HcpMeetingListArgsSchema,
    HcpMeetingUpdateSchema,
    HcpProfileRefSchema,
    HcpQuizSchema,
    HcpRedeemSchema,
    HcpRepSchema,
    HcpSubmissionSchema,
    HcpTierSchema,
    HcpVerifySchema,
    dump_award,
    dump_doctor,
    dump_item,
    dump_meeting,
    dump_participant,
)
from web.api.partner import iso
from web.session_auth import current_actor

bp = api_blueprint("hcp", __name__, "Doctors: master data, meetings, quizzes, academic points")


# --- doctors ----------------------------------------------------------------------------------


@bp.route("/doctors")
class Doctors(MethodView):
    @api_requires("hcp:view")
    @bp.arguments(HcpDoctorListArgsSchema, location="query")
    def get(self, args):
        """Doctors (a rep: their own), in id order; ``after`` pages."""
        found = doctors.list_doctors(
            current_actor(), args["rep_id"], args["tier"], args["verification"], args["q"],
            args["after"], args["limit"],
        )  # fmt: skip
        items = [
            dump_doctor(row) if row else {"profile_id": p.id, "verification": "unverified"}
            for p, row in found
        ]
        return {"items": items, "next": found[-1][0].id if len(found) == args["limit"] else None}


@bp.route("/doctors/<int:profile_id>")
class Doctor(MethodView):
    @api_requires("hcp:view")
    def get(self, profile_id: int):
        """Master data, knowledge per dimension, timeline, points against the annual cap."""
        row = doctors.get_doctor(current_actor(), profile_id)
        report = reports.doctor_report(current_actor(), row.profile_id)
        timeline = [{**item, "at": iso(item["at"])} for item in report["timeline"]]
        return {**dump_doctor(row), **report, "timeline": timeline}

    @api_requires("hcp:edit")
    @bp.arguments(HcpDoctorUpdateSchema)
    def patch(self, data, profile_id: int):
        """Change master data; the tier is recomputed."""
        return dump_doctor(doctors.update_doctor(current_actor(), profile_id, **data))


@bp.route("/doctors/<int:profile_id>/licence")
class DoctorLicence(MethodView):
    @api_requires("hcp:edit")
    @bp.arguments(HcpLicenceSchema)
    def post(self, data, profile_id: int):
        """Record the practising-certificate number (15 digits; unique: 409 if taken)."""
        return dump_doctor(doctors.set_licence(current_actor(), profile_id, data["licence"]))


@bp.route("/doctors/<int:profile_id>/verify")
class DoctorVerify(MethodView):
    @api_requires("hcp:edit")
    @bp.arguments(HcpVerifySchema)
    def post(self, data, profile_id: int):
        """Verify: attested by the doctor's rep, or a check of the licence number."""
        return dump_doctor(doctors.verify(current_actor(), profile_id, data["method"]))


@bp.route("/doctors/<int:profile_id>/rep")
class DoctorRep(MethodView):
    @api_requires("hcp:approve")
    @bp.arguments(HcpRepSchema)
    def put(self, data, profile_id: int):
        """Give the doctor to a rep (or to nobody: null)."""
        return dump_doctor(doctors.assign_rep(current_actor(), profile_id, data["rep_id"]))


@bp.route("/doctors/<int:profile_id>/tier")
class DoctorTier(MethodView):
    @api_requires("hcp:approve")
    @bp.arguments(HcpTierSchema)
    def put(self, data, profile_id: int):
        """Override the computed tier (null: back to the rules); the reason is audited."""
        row = doctors.override_tier(current_actor(), profile_id, data["tier"], data["reason"])
        return dump_doctor(row)


@bp.route("/doctors/<int:profile_id>/redemptions")
class DoctorRedemptions(MethodView):
    @api_requires("hcp:edit")
    @bp.arguments(HcpRedeemSchema)
    def post(self, data, profile_id: int):
        """Spend points on an approved academic item (idempotent per key)."""
        found = academic.redeem(current_actor(), profile_id, data["item_id"],
                                data["idempotency_key"])  # fmt: skip
        return {"id": found.id, "item_id": found.item_id, "points": found.points}, 201


# --- meetings ---------------------------------------------------------------------------------


@bp.route("/meetings")
class Meetings(MethodView):
    @api_requires("hcp:view")
    @bp.arguments(HcpMeetingListArgsSchema, location="query")
    def get(self, args):
        """Meetings, latest first (optionally of one campaign)."""
        return {"items": [dump_meeting(m) for m in meetings.list_meetings(args["campaign"])]}

    @api_requires("hcp:edit")
    @bp.arguments(HcpMeetingCreateSchema)
    def post(self, data):
        """Plan a meeting on approved HCP content (422 otherwise)."""
        return dump_meeting(meetings.create_meeting(current_actor(), data)), 201


@bp.route("/meetings/<int:meeting_id>")
class MeetingResource(MethodView):
    @api_requires("hcp:view")
    def get(self, meeting_id: int):
        """A meeting with its funnel, recorded and reconciled with the raw events."""
        meeting = meetings.get_meeting(meeting_id)
        return {
            **dump_meeting(meeting),
            "report": reports.meeting_report(current_actor(), meeting.id),
        }

    @api_requires("hcp:edit")
    @bp.arguments(HcpMeetingUpdateSchema)
    def patch(self, data, meeting_id: int):
        """Change a meeting; ``status: cancelled`` cancels it."""
        actor = current_actor()
        if data.pop("status", None) == "cancelled":
            meetings.cancel_meeting(actor, meeting_id)
        meeting = meetings.update_meeting(actor, meeting_id, data) if data else None
        return dump_meeting(meeting or meetings.get_meeting(meeting_id))


@bp.route("/meetings/<int:meeting_id>/quiz")
class MeetingQuiz(MethodView):
    @api_requires("hcp:edit")
    @bp.arguments(HcpQuizSchema)
    def put(self, data, meeting_id: int):
        """Set the quiz: questions with options, answer indexes, knowledge dimensions."""
        return dump_meeting(quizzes.set_quiz(current_actor(), meeting_id, data["questions"]))


@bp.route("/meetings/<int:meeting_id>/invitations")
class MeetingInvitations(MethodView):
    @api_requires("hcp:edit")
    @bp.arguments(HcpInvitationSchema)
    def post(self, data, meeting_id: int):
        """A rep's request (pending a manager), or a manager's invitation."""
        rows = meetings.request_invitations(
            current_actor(), meeting_id, data["profile_ids"], data["note"]
        )
        return {"items": [dump_participant(r) for r in rows]}, 201


@bp.route("/meetings/<int:meeting_id>/registrations")
class MeetingRegistrations(MethodView):
    @api_requires("hcp:edit")
    @bp.arguments(HcpProfileRefSchema)
    def post(self, data, meeting_id: int):
        """Register a doctor (taken by phone); the mini-program sends events instead."""
        row = learning.register(current_actor(), meeting_id, data["profile_id"])
        return dump_participant(row), 201


@bp.route("/meetings/<int:meeting_id>/quiz-submissions")
class MeetingSubmissions(MethodView):
    @api_requires("hcp:edit")
    @bp.arguments(HcpSubmissionSchema)
    def post(self, data, meeting_id: int):
        """Enter a doctor's answers; scored per knowledge dimension (the first one counts)."""
        found = quizzes.submit_quiz(
            current_actor(), meeting_id, data["profile_id"], data["answers"]
        )
        return {"id": found.id, "scores": found.scores, "correct": found.correct,
                "total": found.total}, 201  # fmt: skip


@bp.route("/meetings/<int:meeting_id>/awards")
class MeetingAwards(MethodView):
    @api_requires("hcp:edit")
    @bp.arguments(HcpProfileRefSchema)
    def post(self, data, meeting_id: int):
        """Award a completed meeting's points (e.g. once the doctor is verified); 403 for an
        unverified doctor, 409 when not complete or over the annual cap."""
        award = academic.award_completion(current_actor(), meeting_id, data["profile_id"])
        return dump_award(award), 201


@bp.route("/invitation-requests")
class InvitationRequests(MethodView):
    @api_requires("hcp:approve")
    def get(self):
        """Reps' requests waiting for a manager, oldest first."""
        rows = meetings.pending_requests(current_actor())
        return {"items": [{**dump_participant(p), "topic": m.topic} for p, m in rows]}


@bp.route("/invitation-requests/<int:participant_id>/decision")
class InvitationDecision(MethodView):
    @api_requires("hcp:approve")
    @bp.arguments(HcpDecisionSchema)
    def post(self, data, participant_id: int):
        """Approve or reject a request (never one's own)."""
        row = meetings.decide(current_actor(), participant_id, data["approve"], data["note"])
        return dump_participant(row)


# --- catalogue and reports --------------------------------------------------------------------


@bp.route("/academic-items")
class AcademicItems(MethodView):
    @api_requires("hcp:view")
    def get(self):
        """The academic catalogue; only approved items are redeemable."""
        return {"items": [dump_item(i) for i in academic.catalogue()]}

    @api_requires("hcp:edit")
    @bp.arguments(HcpItemSchema)
    def post(self, data):
        """Propose an item (a manager approves it)."""
        return dump_item(academic.create_item(current_actor(), **data)), 201


@bp.route("/academic-items/<int:item_id>/status")
class AcademicItemStatus(MethodView):
    @api_requires("hcp:approve")
    @bp.arguments(HcpItemStatusSchema)
    def post(self, data, item_id: int):
        """Approve (not one's own proposal) or retire an item."""
        return dump_item(academic.set_item_status(current_actor(), item_id, data["status"]))


@bp.route("/reports/reps")
class RepReport(MethodView):
    @api_requires("hcp:view")
    def get(self):
        """Per rep: doctors, verified, coverage in 90 days, knowledge improvements."""
        return {"items": progress.rep_report(current_actor())}


@bp.route("/reports/campaign")
class CampaignReport(MethodView):
    @api_requires("hcp:view")
    @bp.arguments(HcpCampaignArgsSchema, location="query")
    def get(self, args):
        """How many doctors improved in each knowledge dimension over a campaign's meetings."""
        return progress.campaign_report(current_actor(), args["campaign"])
