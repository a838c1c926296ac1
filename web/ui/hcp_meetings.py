"""Doctors' meetings and courses: planning on approved HCP content, the quiz, the funnel
reconciled with raw events, a rep's invitation requests and the manager's approval queue."""

from __future__ import annotations

import json
from zoneinfo import ZoneInfo

from flask import Blueprint, abort, current_app, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import DateTimeLocalField, IntegerField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional

from cdp.exceptions import CdpError
from cdp.hcp import meetings, quizzes, reports
from cdp.hcp.settings import dimensions
from cdp.loyalty.common import setting as loyalty_setting
from web.session_auth import current_actor, requires
from web.ui.forms import ActionForm
from web.ui.hcp import DIMENSION_LABELS

bp = Blueprint("hcp_meetings", __name__, url_prefix="/doctors/meetings")

KIND_LABELS = {
    "department_meeting": _l("Department meeting (科室会)"),
    "webinar": _l("Webinar"),
    "cme_course": _l("CME course"),
}
STAGE_LABELS = {
    "invited": _l("Invited"),
    "registered": _l("Registered"),
    "joined": _l("Joined"),
    "attended": _l("Attended (minimum minutes)"),
    "quiz": _l("Quiz submitted"),
    "points": _l("Points awarded"),
}
INVITATION_LABELS = {
    "requested": _l("Requested"),
    "invited": _l("Invited"),
    "rejected": _l("Rejected"),
}
ACTION_LABELS = {
    "quiz_completed": _l("Quiz completed"),
    "article_read": _l("Article read"),
    "cme_module_completed": _l("CME module completed"),
}
QUIZ_EXAMPLE = [
    {"id": "q1", "text": "……", "options": ["A", "B", "C"], "answer": [0],
     "dimensions": ["product_usage"], "weight": 1},
]  # fmt: skip


class MeetingForm(FlaskForm):
    topic = StringField(_l("Topic"), validators=[DataRequired(), Length(max=200)])
    kind = SelectField(_l("Kind"), choices=[SelectChoice(k, v) for k, v in KIND_LABELS.items()])
    product = StringField(_l("Product"), validators=[Optional(), Length(max=100)])
    therapeutic_area = StringField(_l("Therapeutic area"), validators=[Optional(), Length(max=100)])
    campaign = StringField(_l("Campaign"), validators=[Optional(), Length(max=100)])
    speaker_name = StringField(_l("Speaker"), validators=[Optional(), Length(max=120)])
    starts_at = DateTimeLocalField(_l("Starts at"), validators=[InputRequired()])
    ends_at = DateTimeLocalField(_l("Ends at"), validators=[Optional()])
    content_version_id = SelectField(_l("Approved HCP content"), coerce=int, choices=[])
    min_minutes = IntegerField(
        _l("Minimum minutes for points"),
        default=30,
        validators=[InputRequired(), NumberRange(1, 600)],
    )
    points_action = SelectField(_l("Points action"), choices=[])


class QuizForm(FlaskForm):
    questions = TextAreaField(_l("Questions (JSON)"), validators=[DataRequired()])


class InviteForm(FlaskForm):
    profile_ids = StringField(
        _l("Doctor profile ids (comma-separated)"), validators=[DataRequired()]
    )
    note = StringField(_l("Note for the manager"), validators=[Optional(), Length(max=200)])


def _meeting_form(form: MeetingForm | None = None) -> MeetingForm:
    form = form or MeetingForm()
    form.content_version_id.choices = [
        SelectChoice(v.id, f"{item.name} · v{v.number} · {v.approval_code or ''}")
        for v, item in meetings.hcp_content()
    ]
    form.points_action.choices = [
        SelectChoice(a, a) for a in loyalty_setting("LOYALTY_HCP_ACTIONS")
    ]
    return form


def _aware(value):
    zone = ZoneInfo(current_app.config.get("TIMEZONE") or "Asia/Shanghai")
    return value.replace(tzinfo=zone) if value is not None else None


def _field_error(form, exc: CdpError) -> None:
    field = getattr(form, (exc.field or "").split(".")[0], None)
    if field is None:
        flash(exc.message, "error")
    else:
        field.errors = [*field.errors, exc.message]


@bp.route("")
@requires("hcp:view")
def index():
    """Meetings, latest first, with the approval queue's length for managers."""
    return render_template("hcp/meetings.html", meetings=meetings.list_meetings(),
                           kinds=KIND_LABELS)  # fmt: skip


@bp.route("/new", methods=["GET", "POST"])
@requires("hcp:edit")
def new():
    """Plan a meeting: only approved content meant for doctors can be chosen."""
    form = _meeting_form()
    if form.validate_on_submit():
        data = {name: getattr(form, name).data for name in (
            "topic", "kind", "product", "therapeutic_area", "campaign", "speaker_name",
            "content_version_id", "min_minutes", "points_action")}  # fmt: skip
        data.update(starts_at=_aware(form.starts_at.data), ends_at=_aware(form.ends_at.data))
        try:
            meeting = meetings.create_meeting(current_actor(), data)
        except CdpError as exc:
            _field_error(form, exc)
        else:
            flash(_("Meeting planned. Add its quiz next."))
            return redirect(url_for("hcp_meetings.detail", meeting_id=meeting.id))
    status = 422 if form.errors else 200
    return render_template("hcp/meeting_form.html", form=form), status


def _render(meeting_id: int, status: int = 200, quiz_form=None, invite_form=None):
    actor = current_actor()
    meeting = meetings.get_meeting(meeting_id)
    quiz_form = quiz_form or QuizForm(
        questions=json.dumps(meeting.quiz or QUIZ_EXAMPLE, ensure_ascii=False, indent=2)
    )
    return render_template(
        "hcp/meeting.html", meeting=meeting, report=reports.meeting_report(actor, meeting.id),
        participants=reports.participants(meeting.id, actor), quiz_form=quiz_form,
        invite_form=invite_form or InviteForm(), form=ActionForm(), kinds=KIND_LABELS,
        stages=STAGE_LABELS,
        actions=ACTION_LABELS, invitations=INVITATION_LABELS, dimensions=dimensions(),
        dimension_labels=DIMENSION_LABELS,
    ), status  # fmt: skip


@bp.route("/<int:meeting_id>")
@requires("hcp:view")
def detail(meeting_id: int):
    """The funnel (recorded and from raw events), participants, quiz and invitations."""
    return _render(meeting_id)


@bp.route("/<int:meeting_id>/quiz", methods=["POST"])
@requires("hcp:edit")
def quiz(meeting_id: int):
    form = QuizForm()
    if form.validate_on_submit():
        try:
            questions = json.loads(form.questions.data)
        except ValueError:
            form.questions.errors = [*form.questions.errors, _("This is not valid JSON.")]
        else:
            try:
                quizzes.set_quiz(current_actor(), meeting_id, questions)
            except CdpError as exc:
                form.questions.errors = [*form.questions.errors, exc.message]
            else:
                flash(_("Quiz saved."))
                return redirect(url_for("hcp_meetings.detail", meeting_id=meeting_id))
    return _render(meeting_id, 422, quiz_form=form)


@bp.route("/<int:meeting_id>/invite", methods=["POST"])
@requires("hcp:edit")
def invite(meeting_id: int):
    """A rep asks for invitations (a manager approves); a manager invites at once."""
    form = InviteForm()
    if form.validate_on_submit():
        parts = [p.strip() for p in form.profile_ids.data.replace("，", ",").split(",")]
        if not parts or not all(p.isdigit() for p in parts if p):
            form.profile_ids.errors = [_("Give profile ids separated by commas.")]
        else:
            ids = [int(p) for p in parts if p]
            try:
                rows = meetings.request_invitations(
                    current_actor(), meeting_id, ids, form.note.data
                )
            except CdpError as exc:
                _field_error(form, exc)
            else:
                requested = sum(r.invitation == "requested" for r in rows)
                flash(_("Sent to a manager for approval: %(n)s.", n=requested) if requested
                      else _("Invited: %(n)s.", n=len(rows)))  # fmt: skip
                return redirect(url_for("hcp_meetings.detail", meeting_id=meeting_id))
    return _render(meeting_id, 422, invite_form=form)


@bp.route("/<int:meeting_id>/cancel", methods=["POST"])
@requires("hcp:edit")
def cancel(meeting_id: int):
    if not ActionForm().validate_on_submit():
        abort(400)
    meetings.cancel_meeting(current_actor(), meeting_id)
    flash(_("Meeting cancelled."))
    return redirect(url_for("hcp_meetings.detail", meeting_id=meeting_id))


@bp.route("/requests")
@requires("hcp:approve")
def requests():
    """Reps' invitation requests waiting for a manager (nobody decides their own)."""
    return render_template("hcp/requests.html", rows=meetings.pending_requests(current_actor()),
                           form=ActionForm())  # fmt: skip


@bp.route("/requests/<int:participant_id>/<decision>", methods=["POST"])
@requires("hcp:approve")
def decide(participant_id: int, decision: str):
    if not ActionForm().validate_on_submit() or decision not in ("approve", "reject"):
        abort(400)
    try:
        meetings.decide(current_actor(), participant_id, decision == "approve")
    except CdpError as exc:
        flash(exc.message, "error")
    else:
        flash(_("Request approved.") if decision == "approve" else _("Request rejected."))
    return redirect(url_for("hcp_meetings.requests"))
