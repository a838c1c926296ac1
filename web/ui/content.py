"""Content library UI: list, editor with preview as a profile, review queue, workflow actions."""

from __future__ import annotations

import orjson
from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import DateField, IntegerField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional

from cdp.content import operations as ops
from cdp.content.library import (
    get_item,
    latest_versions,
    list_items,
    review_queue,
    transitions_of,
    version_by_number,
    versions_of,
)
from cdp.content.preview import preview
from cdp.content.schemas import KIND_CHANNELS
from cdp.exceptions import CdpError, ValidationFailed
from cdp.models.content import AUDIENCES, CATEGORIES, CONTENT_KINDS, PRODUCT_CLASSES
from web.session_auth import current_actor, requires
from web.ui.forms import ActionForm

bp = Blueprint("content_ui", __name__)

KIND_LABELS = {
    "wechat_template": _l("WeChat template message"),
    "miniprogram_subscribe": _l("Mini-program subscribe message"),
    "sms": _l("SMS"),
    "article": _l("Article"),
    "miniprogram_link": _l("Mini-program page link"),
    "webhook": _l("Webhook payload"),
}
STATUS_LABELS = {
    "draft": _l("Draft"),
    "submitted": _l("In review"),
    "approved": _l("Approved"),
    "rejected": _l("Rejected"),
    "expired": _l("Expired"),
    "withdrawn": _l("Withdrawn"),
}
AUDIENCE_LABELS = {
    "patient": _l("Patients"),
    "hcp": _l("Doctors"),
    "both": _l("Patients and doctors"),
}
CLASS_LABELS = {"rx": _l("Prescription (Rx)"), "otc": _l("OTC"), "non_drug": _l("Not a drug")}
CATEGORY_LABELS = {"service": _l("Service notice"), "marketing": _l("Marketing")}
CHANNEL_NAMES = {
    "wechat": _l("WeChat official account"),
    "miniprogram": _l("Mini-program"),
    "sms": _l("SMS"),
    "webhook": _l("Webhook"),
}
# Send-guard reasons (cdp.content.guards.REASONS) as the preview shows them.
GUARD_LABELS = {
    "not_approved": _l("The version is not approved."),
    "withdrawn": _l("The version was withdrawn."),
    "expired": _l("The version has expired."),
    "changed_after_approval": _l("The version changed after it was approved."),
    "wrong_channel": _l("This kind of content cannot be sent on this channel."),
    "marketing_on_service_channel": _l("WeChat template messages carry service notices only."),
    "sms_rules": _l("The SMS lacks the sender signature or the opt-out instruction."),
    "no_such_profile": _l("There is no such profile."),
    "profile_merged": _l("The profile was merged into another one."),
    "rx_to_patient": _l("Prescription (Rx) content never goes to patients."),
    "rx_unverified_hcp": _l("Prescription (Rx) content needs a verified doctor (licence number)."),
    "audience_mismatch": _l("The content is not meant for this kind of profile."),
    "automated_marketing_refused": _l("The person refused automated marketing (PIPL Art. 24)."),
    "minor_without_guardian_consent": _l("Under 14 without guardian consent: no marketing."),
    "no_marketing_consent": _l("No marketing consent on this channel."),
    "no_subscribe_credit": _l("No mini-program subscribe credit for this template."),
}
# Which form fields make up the body of each kind: (form field, body key).
BODY_FIELDS = {
    "wechat_template": (("template_id", "template_id"), ("link", "url"), ("fields", "fields")),
    "miniprogram_subscribe": (
        ("template_id", "template_id"),
        ("link", "page"),
        ("fields", "fields"),
    ),
    "sms": (("text", "text"),),
    "article": (("title", "title"), ("summary", "summary"), ("text", "html")),
    "miniprogram_link": (("appid", "appid"), ("link", "path"), ("title", "title")),
    "webhook": (("link", "url"), ("payload", "payload")),
}


def _choices(labels: dict, keys) -> list[SelectChoice]:
    return [SelectChoice(key, labels[key]) for key in keys]


class NewContentForm(FlaskForm):
    name = StringField(_l("Name"), validators=[DataRequired(), Length(max=200)])
    kind = SelectField(_l("Kind"), choices=_choices(KIND_LABELS, CONTENT_KINDS))


class VersionForm(FlaskForm):
    audience = SelectField(_l("Audience"), choices=_choices(AUDIENCE_LABELS, AUDIENCES))
    product_class = SelectField(_l("Drug class"), choices=_choices(CLASS_LABELS, PRODUCT_CLASSES))
    category = SelectField(_l("Purpose"), choices=_choices(CATEGORY_LABELS, CATEGORIES))
    products = StringField(_l("Products (comma separated)"), validators=[Length(max=1000)])
    therapeutic_area = StringField(_l("Therapeutic area"), validators=[Length(max=100)])
    expires_on = DateField(_l("Expires on"), validators=[Optional()])
    approval_code = StringField(_l("Approval code (MLR no.)"), validators=[Length(max=64)])
    template_id = StringField(_l("Template ID"), validators=[Length(max=128)])
    appid = StringField(_l("Mini-program AppID"), validators=[Length(max=64)])
    link = StringField(_l("Link or page path"), validators=[Length(max=1024)])
    title = StringField(_l("Headline"), validators=[Length(max=200)])
    summary = StringField(_l("Summary"), validators=[Length(max=500)])
    text = TextAreaField(_l("Text"), validators=[Length(max=200_000)])
    fields = TextAreaField(_l("Template fields (one per line: name: value)"))
    payload = TextAreaField(_l("Payload (JSON)"))


class ReviewForm(FlaskForm):
    comment = TextAreaField(_l("Comment"), validators=[Length(max=2000)])
    approval_code = StringField(_l("Approval code (MLR no.)"), validators=[Length(max=64)])


class PreviewForm(FlaskForm):
    profile_id = IntegerField(_l("Profile ID"), validators=[InputRequired(), NumberRange(min=1)])
    channel = SelectField(_l("Channel"))
    context = TextAreaField(_l("Journey context (one per line: name: value)"))


def parse_lines(text: str, field: str) -> dict[str, str]:
    values = {}
    for line in (text or "").splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep or not key.strip():
            raise ValidationFailed(_("Write each line as name: value."), field)
        values[key.strip()] = value.strip()
    return values


def body_from_form(kind: str, form: VersionForm) -> dict:
    body: dict = {}
    for field, key in BODY_FIELDS[kind]:
        raw = getattr(form, field).data or ""
        if field == "fields":
            body[key] = parse_lines(raw, "fields")
        elif field == "payload":
            try:
                body[key] = orjson.loads(raw or "{}")
            except orjson.JSONDecodeError:
                raise ValidationFailed(_("The payload is not valid JSON."), "payload") from None
        elif raw.strip():
            body[key] = raw.replace("\r\n", "\n") if field == "text" else raw.strip()
    return body


def form_from_version(kind: str, version) -> VersionForm:
    form = VersionForm(formdata=None)
    for name in ("audience", "product_class", "category", "therapeutic_area", "expires_on"):
        getattr(form, name).data = getattr(version, name)
    form.products.data = ", ".join(version.products or [])
    form.approval_code.data = version.approval_code or ""
    body = version.body or {}
    for field, key in BODY_FIELDS[kind]:
        value = body.get(key)
        if field == "fields":
            value = "\n".join(f"{k}: {v}" for k, v in (value or {}).items())
        elif field == "payload":
            value = orjson.dumps(value or {}, option=orjson.OPT_INDENT_2).decode()
        getattr(form, field).data = value or ""
    return form


def _preview_form(kind: str, formdata=None) -> PreviewForm:
    form = PreviewForm(formdata=formdata)
    form.channel.choices = _choices(CHANNEL_NAMES, KIND_CHANNELS[kind])
    return form


def _render(item, version, form=None, preview_form=None, result=None, status=200):
    versions = versions_of(item.id)
    editable = version.status == "draft"
    return render_template(
        "content/item.html",
        item=item,
        version=version,
        versions=versions,
        history=transitions_of([v.id for v in versions]),
        form=form or form_from_version(item.kind, version),
        editable=editable,
        body_fields=[field for field, _key in BODY_FIELDS[item.kind]],
        review_form=ReviewForm(formdata=None),
        action_form=ActionForm(),
        preview_form=preview_form or _preview_form(item.kind, formdata=None),
        preview=result,
        has_draft=any(v.status == "draft" for v in versions),
    ), status


def _field_error(form: FlaskForm, exc: CdpError) -> None:
    name = (exc.field or "").split(".")[-1]
    target = getattr(form, name, None) if name else None
    if target is None or not hasattr(target, "errors"):
        flash(exc.message, "error")
        return
    target.errors = (
        [*target.errors, exc.message] if isinstance(target.errors, list) else [exc.message]
    )


@bp.app_context_processor
def _labels() -> dict:
    return {
        "content_kind_label": lambda k: KIND_LABELS.get(k, k),
        "content_status_label": lambda s: STATUS_LABELS.get(s, s),
        "audience_label": lambda a: AUDIENCE_LABELS.get(a, a),
        "drug_class_label": lambda c: CLASS_LABELS.get(c, c),
        "content_category_label": lambda c: CATEGORY_LABELS.get(c, c),
        "send_channel_label": lambda c: CHANNEL_NAMES.get(c, c),
        "guard_label": lambda reason, message: GUARD_LABELS.get(reason, message),
    }


@bp.route("/content")
@requires("content:view")
def index():
    """Content items with their latest version; filter by status."""
    status = request.args.get("status") if request.args.get("status") in STATUS_LABELS else None
    items = list_items(status=status, limit=200)
    return render_template(
        "content/index.html",
        items=items,
        latest=latest_versions([i.id for i in items]),
        status=status,
        statuses=STATUS_LABELS,
        form=NewContentForm(formdata=None),
    )


@bp.route("/content", methods=["POST"])
@requires("content:edit")
def create():
    form = NewContentForm()
    if not form.validate_on_submit():
        abort(400)
    version = ops.create_item(current_actor(), form.name.data, form.kind.data)
    return redirect(url_for("content_ui.item", content_id=version.item_id))


@bp.route("/content/review")
@requires("content:review")
def review():
    """Versions waiting for a medical/legal reviewer, oldest first."""
    return render_template("content/review.html", queue=review_queue())


@bp.route("/content/<int:content_id>")
@bp.route("/content/<int:content_id>/versions/<int:number>")
@requires("content:view")
def item(content_id: int, number: int | None = None):
    """An item: the chosen (default latest) version, its editor or frozen view, and history."""
    item = get_item(content_id)
    if number is None:
        versions = versions_of(item.id)
        if not versions:
            abort(404)
        return _render(item, versions[0])
    return _render(item, version_by_number(item.id, number))


@bp.route("/content/<int:content_id>/versions/<int:number>", methods=["POST"])
@requires("content:edit")
def save(content_id: int, number: int):
    item = get_item(content_id)
    version = version_by_number(item.id, number)
    form = VersionForm()
    if not form.validate_on_submit():
        return _render(item, version, form=form, status=422)
    try:
        fields = {
            "body": body_from_form(item.kind, form),
            "products": form.products.data or "",
            "expires_on": form.expires_on.data,
            "approval_code": form.approval_code.data,
            "therapeutic_area": form.therapeutic_area.data,
            "audience": form.audience.data,
            "product_class": form.product_class.data,
            "category": form.category.data,
        }
        ops.update_draft(current_actor(), version.id, **fields)
    except CdpError as exc:
        _field_error(form, exc)
        return _render(item, version, form=form, status=exc.status)
    flash(_("Draft saved."))
    return redirect(url_for("content_ui.item", content_id=item.id, number=number))


@bp.route("/content/<int:content_id>/versions", methods=["POST"])
@requires("content:edit")
def new_version(content_id: int):
    if not ActionForm().validate_on_submit():
        abort(400)
    version = ops.new_version(current_actor(), content_id)
    flash(_("Version %(number)s created as a draft.", number=version.number))
    return redirect(url_for("content_ui.item", content_id=content_id, number=version.number))


ACTIONS = {
    "submit": ("content:edit", _l("Submitted for review.")),
    "approve": ("content:review", _l("Approved.")),
    "reject": ("content:review", _l("Rejected.")),
    "withdraw": ("content:view", _l("Withdrawn: pending sends of it are stopped.")),
}


@bp.route("/content/<int:content_id>/versions/<int:number>/<action>", methods=["POST"])
@requires("content:view")
def transition(content_id: int, number: int, action: str):
    """Submit, approve, reject or withdraw a version (the domain checks the role)."""
    if action not in ACTIONS:
        abort(404)
    form = ReviewForm()
    if not form.validate_on_submit():
        abort(400)
    version = version_by_number(content_id, number)
    comment = (form.comment.data or "").strip()
    actor = current_actor()
    try:
        if action == "submit":
            ops.submit(actor, version.id, comment)
        elif action == "approve":
            ops.approve(actor, version.id, comment, form.approval_code.data)
        elif action == "reject":
            ops.reject(actor, version.id, comment)
        else:
            ops.withdraw(actor, version.id, comment)
    except CdpError as exc:
        if exc.status == 404:
            raise
        flash(_("Not done: %(reason)s", reason=exc.message), "error")
    else:
        flash(ACTIONS[action][1])
    return redirect(url_for("content_ui.item", content_id=content_id, number=number))


@bp.route("/content/<int:content_id>/versions/<int:number>/preview", methods=["POST"])
@requires("content:preview")
def preview_view(content_id: int, number: int):
    """Render the version as a chosen profile (personal data used is audited)."""
    item = get_item(content_id)
    version = version_by_number(item.id, number)
    form = _preview_form(item.kind, formdata=request.form)
    if not form.validate_on_submit():
        return _render(item, version, preview_form=form, status=422)
    try:
        context = parse_lines(form.context.data, "context")
        result = preview(
            current_actor(), version.id, form.profile_id.data, context, form.channel.data
        )
    except CdpError as exc:
        _field_error(form, exc)
        return _render(item, version, preview_form=form, status=exc.status)
    return _render(item, version, preview_form=form, result=result)
