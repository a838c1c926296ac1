"""The Doctors area: doctor list and page (master data, knowledge radar, points), catalogue,
reports per rep and per campaign. Meetings and approvals live in web/ui/hcp_meetings.py."""

from __future__ import annotations

import math
import uuid

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import HiddenField, IntegerField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, NumberRange, Optional

from cdp.auth.permissions import allowed
from cdp.exceptions import CdpError
from cdp.hcp import academic, doctors, meetings, progress, reports
from cdp.hcp.settings import setting
from cdp.models.hcp import SOCIETY_ROLES, TIERS, TITLES
from web.session_auth import current_actor, requires
from web.ui.forms import ActionForm

bp = Blueprint("hcp_ui", __name__, url_prefix="/doctors")

TIER_LABELS = {
    "national_kol": _l("National KOL"),
    "regional_kol": _l("Regional KOL"),
    "hospital_kol": _l("Hospital KOL"),
    "koi": _l("KOI (key opinion influencer)"),
    "general": _l("General"),
}
DIMENSION_LABELS = {
    "diagnosis": _l("Diagnosis"),
    "treatment": _l("Treatment"),
    "drug_class_choice": _l("Drug class choice"),
    "brand_choice": _l("Brand choice"),
    "product_usage": _l("Product usage"),
}
SOCIETY_LABELS = {
    "none": _l("None"),
    "city": _l("City society"),
    "provincial": _l("Provincial society"),
    "national": _l("National society"),
}
CITY_TIER_LABELS = {
    1: _l("Tier 1"),
    2: _l("New tier 1"),
    3: _l("Tier 2"),
    4: _l("Tier 3"),
    5: _l("Tier 4 and below"),
}
TIMELINE_LABELS = {
    "requested": _l("Invitation requested"),
    "invited": _l("Invited"),
    "registered": _l("Registered"),
    "joined": _l("Joined (minutes watched)"),
    "completed": _l("Learning completed"),
    "quiz": _l("Quiz submitted (right answers)"),
    "points_awarded": _l("Academic points awarded"),
    "points_refused": _l("Academic points refused"),
    "redeemed": _l("Points redeemed"),
}
ITEM_KIND_LABELS = {
    "book": _l("Book"),
    "journal": _l("Journal subscription"),
    "conference": _l("Conference registration"),
    "course": _l("Course"),
    "database": _l("Medical database access"),
}


class DoctorForm(FlaskForm):
    hospital = StringField(_l("Hospital"), validators=[Optional(), Length(max=200)])
    department = StringField(_l("Department"), validators=[Optional(), Length(max=100)])
    title = SelectField(
        _l("Title"), choices=[SelectChoice("", "—"), *[SelectChoice(t, t) for t in TITLES]]
    )
    city_tier = SelectField(
        _l("City tier"),
        choices=[
            SelectChoice("", "—"),
            *[SelectChoice(str(k), v) for k, v in CITY_TIER_LABELS.items()],
        ],
    )
    society_role = SelectField(
        _l("Medical society role"),
        choices=[SelectChoice(r, SOCIETY_LABELS[r]) for r in SOCIETY_ROLES],
    )


class LicenceForm(FlaskForm):
    licence = StringField(_l("Practising certificate no."), validators=[DataRequired()])


class TierForm(FlaskForm):
    tier = SelectField(
        _l("Tier"),
        choices=[
            SelectChoice("", _l("As computed by the rules")),
            *[SelectChoice(k, v) for k, v in TIER_LABELS.items()],
        ],
    )
    reason = StringField(_l("Reason"), validators=[DataRequired(), Length(max=200)])


class RepForm(FlaskForm):
    rep_id = SelectField(_l("Rep"), choices=[])


class RedeemForm(FlaskForm):
    item_id = SelectField(_l("Academic item"), coerce=int, choices=[])
    # One redemption per rendered form: a double submit replays instead of spending twice.
    key = HiddenField(default=lambda: uuid.uuid4().hex, validators=[DataRequired()])


class ItemForm(FlaskForm):
    code = StringField(_l("Code"), validators=[DataRequired(), Length(max=64)])
    name = StringField(_l("Name"), validators=[DataRequired(), Length(max=200)])
    kind = SelectField(
        _l("Kind"), choices=[SelectChoice(k, v) for k, v in ITEM_KIND_LABELS.items()]
    )
    points = IntegerField(_l("Points"), validators=[DataRequired(), NumberRange(1, 100_000)])


def radar(knowledge: list[dict], size: int = 300) -> dict:
    """Coordinates of a radar chart of the knowledge scores (SVG drawn with attributes only:
    the CSP forbids inline styles). Unassessed dimensions sit at the centre."""
    n, radius = len(knowledge), size / 2 - 40
    cx, cy = size / 2 + 60, size / 2  # room on both sides for the axis labels

    def point(i: int, score: float, scale: float = 1.0) -> tuple[float, float]:
        angle = -math.pi / 2 + 2 * math.pi * i / max(n, 1)
        r = radius * scale * score / 100
        return round(cx + r * math.cos(angle), 1), round(cy + r * math.sin(angle), 1)

    def polygon(scores) -> str:
        return " ".join(f"{x},{y}" for x, y in (point(i, s) for i, s in enumerate(scores)))

    labels = []
    for i, item in enumerate(knowledge):
        x, y = point(i, 100, 1.15)
        anchor = "middle" if abs(x - cx) < 5 else ("start" if x > cx else "end")
        labels.append({"x": x, "y": round(y + 4, 1), "anchor": anchor,
                       "text": dimension_label(item["dimension"])})  # fmt: skip
    return {
        "width": size + 120,
        "height": size,
        "cx": cx,
        "cy": cy,
        "rings": [polygon([s] * n) for s in (20, 40, 60, 80, 100)],
        "weak": polygon([setting("HCP_WEAK_BELOW")] * n),
        "axes": [point(i, 100) for i in range(n)],
        "shape": polygon([k["score"] or 0 for k in knowledge]),
        "dots": [point(i, k["score"]) for i, k in enumerate(knowledge) if k["score"] is not None],
        "labels": labels,
    }


def dimension_label(code: str):
    return DIMENSION_LABELS.get(code, code)


def _field_error(form, exc: CdpError) -> None:
    field = getattr(form, exc.field or "", None)
    if field is None:
        flash(exc.message, "error")
        return
    field.errors = [*field.errors, exc.message]


@bp.route("")
@requires("hcp:view")
def index():
    """Doctors with their tier and verification; a rep sees their own."""
    tier = request.args.get("tier") if request.args.get("tier") in TIERS else None
    verification = request.args.get("verification")
    q = (request.args.get("q") or "").strip()[:100] or None
    found = doctors.list_doctors(current_actor(), tier=tier, verification=verification, q=q,
                                 after_id=request.args.get("after", 0, type=int), limit=100)  # fmt: skip
    users = {u.id: u for u in doctors.reps()}
    return render_template("hcp/index.html", doctors=found, reps=users, tier=tier,
                           verification=verification, q=q or "")  # fmt: skip


def _render_doctor(profile_id: int, status: int = 200, **forms):
    actor = current_actor()
    row = doctors.get_doctor(actor, profile_id)
    report = reports.doctor_report(actor, row.profile_id)
    rep_form = forms.get("rep_form") or RepForm(rep_id=str(row.rep_id or ""))
    rep_form.rep_id.choices = [
        SelectChoice("", "—"),
        *[SelectChoice(str(u.id), u.name or u.email) for u in doctors.reps()],
    ]
    redeem_form = forms.get("redeem_form") or RedeemForm()
    redeem_form.item_id.choices = [
        SelectChoice(i.id, f"{i.name} ({i.points})") for i in academic.catalogue(approved_only=True)
    ]
    doctor_form = forms.get("doctor_form") or DoctorForm(
        hospital=row.hospital, department=row.department, title=row.title or "",
        city_tier=str(row.city_tier or ""), society_role=row.society_role,
    )  # fmt: skip
    return render_template(
        "hcp/doctor.html", row=row, report=report, chart=radar(report["knowledge"]),
        licence=doctors.licence_of(row.profile_id), rep=doctors.reps(), doctor_form=doctor_form,
        licence_form=forms.get("licence_form") or LicenceForm(), tier_form=forms.get("tier_form")
        or TierForm(tier=row.tier_override or ""), rep_form=rep_form, redeem_form=redeem_form,
        form=ActionForm(),
    ), status  # fmt: skip


@bp.route("/<int:profile_id>")
@requires("hcp:view")
def doctor(profile_id: int):
    """Master data, knowledge radar, points against the annual cap, timeline."""
    return _render_doctor(profile_id)


def _apply(profile_id: int, form, operation, done: str, form_name: str):
    if form.validate_on_submit():
        try:
            operation()
        except CdpError as exc:
            _field_error(form, exc)
        else:
            flash(done)
            return redirect(url_for("hcp_ui.doctor", profile_id=profile_id))
    return _render_doctor(profile_id, 422, **{form_name: form})


@bp.route("/<int:profile_id>/edit", methods=["POST"])
@requires("hcp:edit")
def edit(profile_id: int):
    form = DoctorForm()
    data = {
        "hospital": form.hospital.data or "", "department": form.department.data or "",
        "title": form.title.data or None, "society_role": form.society_role.data,
        "city_tier": int(form.city_tier.data) if (form.city_tier.data or "").isdigit() else None,
    }  # fmt: skip
    return _apply(profile_id, form, lambda: doctors.update_doctor(current_actor(), profile_id, **data),
                  _("Doctor saved."), "doctor_form")  # fmt: skip


@bp.route("/<int:profile_id>/licence", methods=["POST"])
@requires("hcp:edit")
def licence(profile_id: int):
    form = LicenceForm()
    return _apply(profile_id, form,
                  lambda: doctors.set_licence(current_actor(), profile_id, form.licence.data),
                  _("Licence number recorded."), "licence_form")  # fmt: skip


@bp.route("/<int:profile_id>/verify/<method>", methods=["POST"])
@requires("hcp:edit")
def verify(profile_id: int, method: str):
    if not ActionForm().validate_on_submit():
        abort(400)
    try:
        doctors.verify(current_actor(), profile_id, method)
    except CdpError as exc:
        flash(exc.message, "error")
    else:
        flash(_("Doctor verified."))
    return redirect(url_for("hcp_ui.doctor", profile_id=profile_id))


@bp.route("/<int:profile_id>/tier", methods=["POST"])
@requires("hcp:approve")
def tier(profile_id: int):
    form = TierForm()
    return _apply(profile_id, form,
                  lambda: doctors.override_tier(current_actor(), profile_id, form.tier.data or None,
                                                form.reason.data),
                  _("Tier saved."), "tier_form")  # fmt: skip


@bp.route("/<int:profile_id>/rep", methods=["POST"])
@requires("hcp:approve")
def rep(profile_id: int):
    form = RepForm()
    form.rep_id.choices = [
        SelectChoice("", "—"),
        *[SelectChoice(str(u.id), u.email) for u in doctors.reps()],
    ]
    rep_id = int(form.rep_id.data) if (form.rep_id.data or "").isdigit() else None
    return _apply(profile_id, form, lambda: doctors.assign_rep(current_actor(), profile_id, rep_id),
                  _("Rep assigned."), "rep_form")  # fmt: skip


@bp.route("/<int:profile_id>/redeem", methods=["POST"])
@requires("hcp:edit")
def redeem(profile_id: int):
    form = RedeemForm()
    form.item_id.choices = [SelectChoice(i.id, i.name) for i in academic.catalogue(True)]
    key = f"ui:{(form.key.data or '')[:64]}"
    return _apply(profile_id, form,
                  lambda: academic.redeem(current_actor(), profile_id, form.item_id.data, key),
                  _("Points redeemed."), "redeem_form")  # fmt: skip


# --- catalogue and reports --------------------------------------------------------------------


@bp.route("/catalogue", methods=["GET", "POST"])
@requires("hcp:view")
def catalogue():
    """The academic items points can be spent on; managers approve proposals."""
    form = ItemForm()
    if form.is_submitted():
        if not allowed(current_actor().role, "hcp:edit"):
            abort(403)
        if form.validate():
            try:
                academic.create_item(current_actor(), form.code.data, form.name.data,
                                     form.kind.data, form.points.data)  # fmt: skip
            except CdpError as exc:
                _field_error(form, exc)
            else:
                flash(_("Item proposed: a manager approves it before it can be redeemed."))
                return redirect(url_for("hcp_ui.catalogue"))
    status = 422 if form.errors else 200
    return render_template("hcp/catalogue.html", items=academic.catalogue(), form=form,
                           action=ActionForm(), kinds=ITEM_KIND_LABELS), status  # fmt: skip


@bp.route("/catalogue/<int:item_id>/<status>", methods=["POST"])
@requires("hcp:approve")
def item_status(item_id: int, status: str):
    if not ActionForm().validate_on_submit():
        abort(400)
    try:
        academic.set_item_status(current_actor(), item_id, status)
    except CdpError as exc:
        flash(exc.message, "error")
    return redirect(url_for("hcp_ui.catalogue"))


@bp.route("/reports/reps")
@requires("hcp:view")
def rep_report():
    """Per rep: doctors, coverage, and their doctors' knowledge improvements."""
    return render_template("hcp/reps.html", lines=progress.rep_report(current_actor()))


@bp.route("/reports/campaigns")
@requires("hcp:view")
def campaign_report():
    """How many doctors improved in each dimension over a campaign's meetings."""
    names = meetings.campaigns()
    chosen = request.args.get("campaign") or (names[0] if names else None)
    report = progress.campaign_report(current_actor(), chosen) if chosen else None
    return render_template("hcp/campaigns.html", names=names, chosen=chosen, report=report)


def _template_helpers() -> dict:
    return {
        "tier_label": lambda t: TIER_LABELS.get(t, t),
        "dimension_label": dimension_label,
        "society_label": lambda s: SOCIETY_LABELS.get(s, s),
        "city_tier_label": lambda c: CITY_TIER_LABELS.get(c, c or "—"),
        "timeline_label": lambda k: TIMELINE_LABELS.get(k, k),
        "item_kind_label": lambda k: ITEM_KIND_LABELS.get(k, k),
    }


@bp.record_once
def _register_helpers(state) -> None:
    state.app.jinja_env.globals.update(_template_helpers())
