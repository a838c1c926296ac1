"""The loyalty area: coupon campaigns (figures, burn-down, stores), partners, reconciliation.

Also the profile page's coupons-and-points panel: ``loyalty/_profile_panel.html`` reads
``loyalty_panel(profile_id)``, a template global registered here.
"""

from __future__ import annotations

import csv
import io

import orjson
from flask import Blueprint, Response, abort, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import IntegerField, SelectField, SelectMultipleField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional

from cdp.auth.permissions import allowed
from cdp.exceptions import CdpError
from cdp.loyalty import campaigns, coupons, ledger, partners
from cdp.loyalty.codes import display
from cdp.loyalty.common import yuan
from cdp.loyalty.syncs import get_sync, list_syncs, rejected_rows
from web.session_auth import current_actor, requires
from web.ui.forms import ActionForm

bp = Blueprint("loyalty", __name__, url_prefix="/loyalty")

TYPE_LABELS = {
    "amount_off": _l("Amount off"),
    "percent_off": _l("Percent off"),
    "gift": _l("Gift"),
}
STATUS_LABELS = {
    "draft": _l("Draft"),
    "active": _l("Active"),
    "paused": _l("Paused"),
    "ended": _l("Ended"),
    "issued": _l("Issued"),
    "redeemed": _l("Redeemed"),
    "expired": _l("Expired"),
    "queued": _l("Queued"),
    "running": _l("Running"),
    "succeeded": _l("Succeeded"),
    "failed": _l("Failed"),
    "suspended": _l("Suspended"),
}
ENTRY_LABELS = {
    "earn": _l("Earned"),
    "burn": _l("Spent"),
    "expire": _l("Expired"),
    "adjust": _l("Adjusted"),
    "reverse": _l("Reversed"),
}


class CampaignForm(FlaskForm):
    name = StringField(_l("Name"), validators=[DataRequired(), Length(max=200)])
    type = SelectField(_l("Type"), choices=[SelectChoice(k, v) for k, v in TYPE_LABELS.items()])
    value = StringField(_l("Value (yuan, or percent for percent off)"), validators=[DataRequired()])
    budget = IntegerField(_l("Budget (coupons)"), validators=[InputRequired(), NumberRange(1)])
    per_profile_limit = IntegerField(
        _l("Per-profile limit"), default=1, validators=[InputRequired(), NumberRange(1, 100)]
    )
    valid_days = IntegerField(
        _l("Valid for (days after issue)"), default=30, validators=[Optional(), NumberRange(1)]
    )
    audience = SelectField(
        _l("Audience"),
        choices=[SelectChoice("patient", _l("Patient")), SelectChoice("hcp", _l("Doctor"))],
    )
    products = StringField(_l("Product codes (comma-separated, optional)"))
    partner_ids = SelectMultipleField(_l("Partners (none selected: all)"), coerce=int, choices=[])
    status = SelectField(
        _l("Start as"),
        choices=[SelectChoice("draft", _l("Draft")), SelectChoice("active", _l("Active"))],
    )


class PartnerForm(FlaskForm):
    name = StringField(_l("Name"), validators=[DataRequired(), Length(max=120)])
    code = StringField(_l("Code (card namespace)"), validators=[Optional(), Length(max=32)])


class StoreForm(FlaskForm):
    code = StringField(_l("Store code"), validators=[DataRequired(), Length(max=64)])
    name = StringField(_l("Store name"), validators=[DataRequired(), Length(max=200)])
    city = StringField(_l("City"), validators=[Optional(), Length(max=64)])


def _field_error(form, exc: CdpError) -> None:
    field = getattr(form, exc.field or "", None) or form.name
    field.errors = [*field.errors, exc.message]


@bp.route("")
@requires("loyalty:view")
def index():
    """Campaigns with their figures, and the partners."""
    found = campaigns.list_campaigns()
    return render_template(
        "loyalty/index.html",
        campaigns=found,
        stats=campaigns.campaign_stats([c.id for c in found]),
        partners=partners.list_partners(),
    )


def _campaign_form() -> CampaignForm:
    form = CampaignForm()
    form.partner_ids.choices = [SelectChoice(p.id, p.name) for p in partners.list_partners()]
    return form


@bp.route("/campaigns/new", methods=["GET", "POST"])
@requires("loyalty:edit")
def new_campaign():
    """Create a campaign; the drug-law rules refuse prescription products."""
    form = _campaign_form()
    if form.validate_on_submit():
        value = form.value.data.strip()
        data = {
            "name": form.name.data,
            "type": form.type.data,
            "value": int(value) if form.type.data == "percent_off" and value.isdigit() else value,
            "budget": form.budget.data,
            "per_profile_limit": form.per_profile_limit.data,
            "valid_days": form.valid_days.data,
            "audience": form.audience.data,
            "products": [p.strip() for p in (form.products.data or "").split(",") if p.strip()],
            "partner_ids": form.partner_ids.data or [],
            "status": form.status.data,
        }
        try:
            campaign = campaigns.create_campaign(current_actor(), data)
        except CdpError as exc:
            _field_error(form, exc)
        else:
            flash(_("Campaign created."))
            return redirect(url_for("loyalty.campaign", campaign_id=campaign.id))
    status = 422 if form.errors else 200
    return render_template("loyalty/campaign_form.html", form=form), status


@bp.route("/campaigns/<int:campaign_id>")
@requires("loyalty:view")
def campaign(campaign_id: int):
    """Figures, budget burn-down, redemption funnel and redemptions by store."""
    found = campaigns.get_campaign(campaign_id)
    series = campaigns.burn_down(found)
    return render_template(
        "loyalty/campaign.html",
        campaign=found,
        stats=campaigns.campaign_stats([found.id])[found.id],
        series=series,
        chart=_burn_down_chart(found.budget, series),
        by_store=campaigns.redemptions_by_store(found.id),
        transitions=campaigns.TRANSITIONS[found.status],
        form=ActionForm(),
    )


def _burn_down_chart(budget: int, series: list[dict], width=600, height=160) -> dict:
    """Points of an SVG polyline of budget left per day (drawn with attributes, no styles)."""
    if not series:
        return {"points": "", "width": width, "height": height, "labels": []}
    step = width / max(len(series), 1)
    points = [f"0,{0:.1f}"]
    for n, day in enumerate(series, start=1):
        y = height * (1 - day["left"] / budget) if budget else height
        points.append(f"{n * step:.1f},{y:.1f}")
    labels = [series[0]["day"], series[-1]["day"]]
    return {"points": " ".join(points), "width": width, "height": height, "labels": labels}


@bp.route("/campaigns/<int:campaign_id>/status/<status>", methods=["POST"])
@requires("loyalty:edit")
def campaign_status(campaign_id: int, status: str):
    if not ActionForm().validate_on_submit():
        abort(400)
    try:
        campaigns.set_status(current_actor(), campaign_id, status)
    except CdpError as exc:
        flash(exc.message, "error")
    return redirect(url_for("loyalty.campaign", campaign_id=campaign_id))


# --- partners ---------------------------------------------------------------------------------


@bp.route("/partners", methods=["GET", "POST"])
@requires("loyalty:view")
def partner_list():
    """Partner pharmacies; admins create them here (the key is shown once)."""
    form = PartnerForm()
    if form.is_submitted():
        if not allowed(current_actor().role, "loyalty:partners"):
            abort(403)
        if form.validate():
            try:
                partner, key = partners.create_partner(
                    current_actor(), form.name.data, form.code.data
                )
            except CdpError as exc:
                _field_error(form, exc)
            else:
                return _render_partner(partner, api_key=key, created=True)
    status = 422 if form.errors else 200
    return render_template(
        "loyalty/partners.html", partners=partners.list_partners(), form=form
    ), status


def _render_partner(partner, api_key=None, created=False, store_form=None, status=200):
    return render_template(
        "loyalty/partner.html",
        partner=partner,
        stores=partners.list_stores(partner.id),
        keys=partners.partner_keys(partner.id),
        syncs=list_syncs(partner.id),
        api_key=api_key,
        created=created,
        store_form=store_form or StoreForm(),
        form=ActionForm(),
    ), status


@bp.route("/partners/<int:partner_id>")
@requires("loyalty:view")
def partner(partner_id: int):
    """Stores, keys (prefixes only) and the member sync history with counts."""
    return _render_partner(partners.get_partner(partner_id))


@bp.route("/partners/<int:partner_id>/rotate-key", methods=["POST"])
@requires("loyalty:partners")
def rotate_key(partner_id: int):
    if not ActionForm().validate_on_submit():
        abort(400)
    found, key = partners.rotate_key(current_actor(), partner_id)
    return _render_partner(found, api_key=key)


@bp.route("/partners/<int:partner_id>/stores", methods=["POST"])
@requires("loyalty:partners")
def add_store(partner_id: int):
    form = StoreForm()
    found = partners.get_partner(partner_id)
    if form.validate_on_submit():
        try:
            partners.add_store(
                current_actor(), found.id, form.code.data, form.name.data, form.city.data or ""
            )
        except CdpError as exc:
            _field_error(form, exc)
        else:
            flash(_("Store added."))
            return redirect(url_for("loyalty.partner", partner_id=found.id))
    return _render_partner(found, store_form=form, status=422)


@bp.route("/partners/<int:partner_id>/syncs/<int:sync_id>/rejected.csv", methods=["POST"])
@requires("loyalty:partners")
def rejected_csv(partner_id: int, sync_id: int):
    """The rejected rows of a sync as CSV (personal data: a POST, and audited)."""
    if not ActionForm().validate_on_submit():
        abort(400)
    get_sync(sync_id, partner_id)
    rows = rejected_rows(current_actor(), sync_id, partner_id)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["row", "reason", "data"])
    for item in rows:
        data = item["row"]
        text = orjson.dumps(data).decode() if not isinstance(data, str) else data
        writer.writerow([item["index"] + 1, item["reason"], text])
    return Response(
        "\ufeff" + out.getvalue(),
        mimetype="text/csv",
        headers={"Content-Disposition": f"attachment; filename=sync-{sync_id}-rejected.csv"},
    )


@bp.route("/reconciliation")
@requires("loyalty:view")
def reconciliation():
    """Points balances checked against the ledger and the unspent lots."""
    return render_template(
        "loyalty/reconciliation.html",
        report=ledger.reconciliation(),
        partners={p.id: p for p in partners.list_partners()},
    )


# --- the profile panel ------------------------------------------------------------------------


def profile_panel(profile_id: int) -> dict | None:
    """Context of ``loyalty/_profile_panel.html``: coupons, balance and points history."""

    if not current_user.is_authenticated or not allowed(current_user.role, "loyalty:view"):
        return None
    soon, when = ledger.expiring(profile_id)
    return {
        "balance": ledger.balance(profile_id),
        "expiring": soon,
        "expiring_at": when,
        "coupons": coupons.profile_coupons(profile_id, limit=20),
        "entries": ledger.history(profile_id, limit=20),
    }


def _template_helpers() -> dict:
    return {
        "loyalty_panel": profile_panel,
        "coupon_code": display,
        "yuan": yuan,
        "loyalty_status": lambda s: STATUS_LABELS.get(s, s),
        "coupon_type": lambda t: TYPE_LABELS.get(t, t),
        "entry_label": lambda k: ENTRY_LABELS.get(k, k),
    }


@bp.record_once
def _register_helpers(state) -> None:
    # Globals, not a context processor: imported macros and included panels see them too.
    state.app.jinja_env.globals.update(_template_helpers())
