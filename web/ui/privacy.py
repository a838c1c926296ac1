"""Privacy UI: data-subject requests (export, erasure status), retention rules, consent panel.

The consent panel is a small include for the profile page (owned elsewhere):
``{% include "privacy/_consent_panel.html" %}`` with ``profile`` in the context; it calls
the ``consent_panel(profile_id)`` template global registered here.
"""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, Response, abort, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField, IntegerField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange

from cdp.consent import PURPOSES, consent_history, consent_states, has_refused, set_consent
from cdp.content.library import local_date
from cdp.db import db, utcnow
from cdp.exceptions import CdpError
from cdp.models import JobRun, Profile
from cdp.models.consent import CHANNELS, STATUSES
from cdp.models.privacy import PrivacyRequest
from cdp.privacy import erasure, export, retention
from cdp.privacy.minors import GUARDIAN_PURPOSE, is_minor
from web.labels import can
from web.session_auth import current_actor, requires

bp = Blueprint("privacy_ui", __name__)

PURPOSE_LABELS = {
    "marketing": _l("Marketing"),
    "health_data": _l("Health data processing"),
    "third_party_sharing": _l("Sharing with partners"),
    "automated_marketing": _l("Automated, personalised marketing"),
    "guardian": _l("Guardian consent (under 14)"),
}
CONSENT_CHANNELS = {
    "wechat": _l("WeChat"),
    "miniprogram": _l("Mini-program"),
    "sms": _l("SMS"),
    "phone": _l("Phone"),
    "email": _l("E-mail"),
    "*": _l("All channels"),
}
CONSENT_STATUS = {"granted": _l("Granted"), "withdrawn": _l("Withdrawn")}
REQUEST_KINDS = {"export": _l("Export"), "erasure": _l("Erasure")}
REQUEST_STATES = {
    "queued": _l("Queued"),
    "running": _l("Running"),
    "completed": _l("Completed"),
    "failed": _l("Failed"),
}


class ExportForm(FlaskForm):
    profile_id = IntegerField(_l("Profile ID"), validators=[InputRequired(), NumberRange(min=1)])
    format = SelectField(
        _l("Format"),
        choices=[SelectChoice("json", "JSON"), SelectChoice("zip", _l("CSV files (zip)"))],
    )


class EraseForm(FlaskForm):
    profile_id = IntegerField(_l("Profile ID"), validators=[InputRequired(), NumberRange(min=1)])
    reason = StringField(_l("Reason"), validators=[Length(max=300)])
    confirm = BooleanField(_l("I understand this cannot be undone"), validators=[DataRequired()])


class RetentionForm(FlaskForm):
    event_name = StringField(
        _l("Event name (* for all others)"), validators=[DataRequired(), Length(max=200)]
    )
    days = IntegerField(
        _l("Days kept"), validators=[InputRequired(), NumberRange(min=1, max=retention.MAX_DAYS)]
    )


class RetentionDeleteForm(FlaskForm):
    event_name = StringField(validators=[DataRequired(), Length(max=200)])


class ConsentForm(FlaskForm):
    purpose = SelectField(
        _l("Purpose"), choices=[SelectChoice(p, PURPOSE_LABELS[p]) for p in PURPOSES]
    )
    channel = SelectField(
        _l("Channel"), choices=[SelectChoice(c, CONSENT_CHANNELS[c]) for c in CHANNELS]
    )
    status = SelectField(
        _l("Answer"), choices=[SelectChoice(s, CONSENT_STATUS[s]) for s in STATUSES]
    )
    note = StringField(_l("Evidence (e.g. signed form number)"), validators=[Length(max=200)])


def consent_panel(profile_id: int) -> dict:
    """What the consent panel of a profile page shows (no personal data)."""
    profile = db.session.get(Profile, profile_id)
    minor = bool(profile) and is_minor(profile, local_date(utcnow()))
    return {
        "profile_id": profile_id,
        "current": consent_states(profile_id),
        "history": consent_history(profile_id, limit=20),
        "minor": minor,
        "guardian_missing": minor
        and not any(
            s.purpose == GUARDIAN_PURPOSE and s.status == "granted"
            for s in consent_states(profile_id)
        ),
        "refused_automated": has_refused(profile_id, "automated_marketing"),
        "form": ConsentForm(formdata=None) if can("consents:edit") else None,
    }


@bp.app_context_processor
def _globals() -> dict:
    return {
        "consent_panel": consent_panel,
        "consent_purpose_label": lambda p: PURPOSE_LABELS.get(p, p),
        "consent_channel_label": lambda c: CONSENT_CHANNELS.get(c, c),
        "consent_status_label": lambda s: CONSENT_STATUS.get(s, s),
    }


def _render(status: int = 200, **forms):
    requests = db.session.scalars(
        sa.select(PrivacyRequest).order_by(PrivacyRequest.id.desc()).limit(100)
    ).all()
    job_ids = [r.job_id for r in requests if r.job_id]
    jobs = {j.id: j for j in db.session.scalars(sa.select(JobRun).where(JobRun.id.in_(job_ids)))}
    return render_template(
        "privacy/index.html",
        requests=requests,
        jobs=jobs,
        rules=retention.list_rules(),
        kinds=REQUEST_KINDS,
        states=REQUEST_STATES,
        export_form=forms.get("export_form") or ExportForm(formdata=None),
        erase_form=forms.get("erase_form") or EraseForm(formdata=None),
        retention_form=forms.get("retention_form") or RetentionForm(formdata=None),
        delete_form=RetentionDeleteForm(formdata=None),
    ), status


@bp.route("/privacy")
@requires("privacy:view")
def index():
    """Export and erasure requests with their status, and the event retention rules."""
    return _render()


def _fail(form, field: str, exc: CdpError, **forms):
    getattr(form, field).errors = [exc.message]
    return _render(exc.status, **forms)


@bp.route("/privacy/export", methods=["POST"])
@requires("privacy:export")
def export_view():
    """Download everything held about a person (recorded and audited)."""
    form = ExportForm()
    if not form.validate_on_submit():
        return _render(422, export_form=form)
    try:
        bundle = export.export_person(current_actor(), form.profile_id.data)
    except CdpError as exc:
        return _fail(form, "profile_id", exc, export_form=form)
    name = f"profile-{bundle['profile_id']}-export"
    if form.format.data == "zip":
        body, mimetype, name = export.bundle_zip(bundle), "application/zip", name + ".zip"
    else:
        body, mimetype, name = export.bundle_json(bundle), "application/json", name + ".json"
    return Response(
        body, mimetype=mimetype, headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )


@bp.route("/privacy/erase", methods=["POST"])
@requires("privacy:erase")
def erase_view():
    """Queue an erasure; its status shows in the requests table."""
    form = EraseForm()
    if not form.validate_on_submit():
        return _render(422, erase_form=form)
    try:
        request = erasure.request_erasure(current_actor(), form.profile_id.data, form.reason.data)
    except CdpError as exc:
        return _fail(form, "profile_id", exc, erase_form=form)
    flash(_("Erasure request %(id)s queued.", id=request.id))
    return redirect(url_for("privacy_ui.index"))


@bp.route("/privacy/retention", methods=["POST"])
@requires("privacy:retention")
def retention_view():
    form = RetentionForm()
    if not form.validate_on_submit():
        return _render(422, retention_form=form)
    try:
        retention.set_rule(current_actor(), form.event_name.data, form.days.data)
    except CdpError as exc:
        return _fail(form, "event_name", exc, retention_form=form)
    flash(_("Retention rule saved."))
    return redirect(url_for("privacy_ui.index"))


@bp.route("/privacy/retention/delete", methods=["POST"])
@requires("privacy:retention")
def retention_delete():
    form = RetentionDeleteForm()
    if not form.validate_on_submit():
        abort(400)
    retention.delete_rule(current_actor(), form.event_name.data)
    flash(_("Retention rule removed."))
    return redirect(url_for("privacy_ui.index"))


@bp.route("/profiles/<int:profile_id>/consents", methods=["POST"])
@requires("consents:edit")
def record_consent_view(profile_id: int):
    """Record a grant or withdrawal from the profile page's consent panel."""
    form = ConsentForm()
    if not form.validate_on_submit():
        abort(400)
    evidence = {"form": "ui"}
    if (form.note.data or "").strip():
        evidence["note"] = form.note.data.strip()
    set_consent(
        current_actor(),
        profile_id,
        form.purpose.data,
        form.channel.data,
        form.status.data,
        evidence=evidence,
    )
    flash(_("Consent recorded."))
    return redirect(url_for("profile.detail", profile_id=profile_id) + "#consents")
