"""The areas of the navigation frame: profiles, sources, audit, settings and those to come."""

from __future__ import annotations

import re

import orjson
import sqlalchemy as sa
from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from marshmallow import ValidationError

from cdp.audit import verify_chain
from cdp.db import db
from cdp.exceptions import ValidationFailed
from cdp.ingest.plans import set_tracking_plan
from cdp.models import User
from cdp.models.profiles import PROFILE_KINDS
from cdp.profiles import identity_summary, list_profiles, search_profiles
from cdp.sources import (
    SOURCE_KINDS,
    connector_health,
    connector_health_overview,
    create_source,
    endpoint_urls,
    get_kind,
    get_source,
    list_sources,
    list_violations,
    rotate_write_key,
    source_figures,
    source_options,
    update_source,
)
from web.api import audit as audit_log
from web.session_auth import current_actor, requires
from web.ui.forms import (
    ActionForm,
    SearchForm,
    SourceEditForm,
    SourceForm,
    source_edit_form,
    source_form,
)

bp = Blueprint("areas", __name__)

PAGE_SIZE = 50


@bp.route("/profiles", methods=["GET", "POST"])
@requires("profiles:view")
def profiles():
    """List profiles by kind (keyset-paged on id), or search them (POST, keeps PII out of URLs).

    Lists show no personal data: id, kind, city, identifier types and last activity.
    """
    form = SearchForm()
    kind = request.values.get("kind") if request.values.get("kind") in PROFILE_KINDS else None
    query, next_after = "", None
    if request.method == "POST":
        if not form.validate_on_submit():
            abort(400)
        query = (form.q.data or "").strip()
        if not query:
            return redirect(url_for("areas.profiles", kind=kind))
        page = [p for p in search_profiles(query, limit=PAGE_SIZE) if not kind or p.kind == kind]
    else:
        after = request.args.get("after", 0, type=int)
        page = list_profiles(kind=kind, after_id=after, limit=PAGE_SIZE + 1)
        next_after = page[PAGE_SIZE - 1].id if len(page) > PAGE_SIZE else None
        page = page[:PAGE_SIZE]
    return render_template(
        "areas/profiles.html",
        profiles=page,
        idents=identity_summary([p.id for p in page]),
        kind=kind,
        query=query,
        next_after=next_after,
        form=form,
    )


# Event counts stop here: the list stays cheap however many events a source has.
LIST_COUNT_CAP = 10_000
DETAIL_COUNT_CAP = 100_000


def _render_sources(form: SourceForm, status: int = 200):
    sources = list_sources()
    return render_template(
        "areas/sources.html",
        sources=sources,
        figures=source_figures(sources, cap=LIST_COUNT_CAP),
        health=connector_health_overview([s.id for s in sources]),
        count_cap=LIST_COUNT_CAP,
        form=form,
    ), status


@bp.route("/sources")
@requires("sources:view")
def sources():
    """List sources with a health badge, last event and (capped) counts; the create form."""
    return _render_sources(source_form(SOURCE_KINDS.values()))


@bp.route("/sources", methods=["POST"])
@requires("sources:edit")
def create_source_view():
    """Create a source with its kind's options; show its endpoints and write key once."""
    form = source_form(SOURCE_KINDS.values())
    if not form.validate_on_submit():
        return _render_sources(form, 422)
    try:
        source, write_key = create_source(
            current_actor(),
            form.name.data,
            form.kind.data,
            form.options_for(form.kind.data),
            default_profile_kind=form.default_profile_kind.data,
        )
    except ValidationFailed as exc:
        form.add_domain_error(exc, form.kind.data)
        return _render_sources(form, 422)
    return _render_source(source, write_key=write_key, created=True)


def _render_source(source, write_key=None, created=False):
    kind = SOURCE_KINDS.get(source.kind)
    stored = source_options(source) if created and kind else {}
    return render_template(
        "areas/source_detail.html",
        source=source,
        figures=source_figures([source], cap=DETAIL_COUNT_CAP)[source.id],
        health=connector_health(source.id),
        urls=endpoint_urls(source, current_app.config["PUBLIC_URL"]),
        violations=list_violations(source.id, limit=PAGE_SIZE),
        write_key=write_key,
        created=created,
        # Names only: which secrets were stored (their values are never shown again).
        stored_secrets=[k for k in (kind.secret_options if kind else ()) if k in stored],
        form=ActionForm(),
    )


@bp.route("/sources/<source_id>")
@requires("sources:view")
def source_detail(source_id: str):
    """A source: health, endpoints, counts, recent connector errors and violations."""
    return _render_source(get_source(source_id))


def _render_edit(source, form: SourceEditForm, status: int = 200):
    stored = source_options(source)
    return render_template(
        "areas/source_edit.html",
        source=source,
        form=form,
        stored_secrets={k for k in get_kind(source.kind).secret_options if k in stored},
    ), status


@bp.route("/sources/<source_id>/edit")
@requires("sources:edit")
def edit_source(source_id: str):
    """The edit form: name, state and options; secrets show only whether they are set."""
    source = get_source(source_id)
    kind = get_kind(source.kind)
    return _render_edit(source, source_edit_form(kind, source, source_options(source)))


@bp.route("/sources/<source_id>/edit", methods=["POST"])
@requires("sources:edit")
def update_source_view(source_id: str):
    """Save the edit form; a blank secret keeps its value, a blank option goes back to default."""
    source = get_source(source_id)
    form = source_edit_form(get_kind(source.kind), source, {})
    if not form.validate_on_submit():
        return _render_edit(source, form, 422)
    try:
        update_source(
            current_actor(),
            source.id,
            form.name.data,
            form.options_for(source.kind),
            form.default_profile_kind.data,
            form.enabled.data,
        )
    except ValidationFailed as exc:
        form.add_domain_error(exc, source.kind)
        return _render_edit(source, form, 422)
    flash(_("Source saved."))
    return redirect(url_for("areas.source_detail", source_id=source.id))


@bp.route("/sources/<source_id>/rotate-key", methods=["POST"])
@requires("sources:edit")
def rotate_key(source_id: str):
    """Replace the write key; the new one is shown once, the old one stops working."""
    if not ActionForm().validate_on_submit():
        abort(400)
    source, write_key = rotate_write_key(current_actor(), source_id)
    return _render_source(source, write_key=write_key)


@bp.route("/sources/<source_id>/tracking-plan", methods=["POST"])
@requires("sources:edit")
def set_tracking_plan_view(source_id: str):
    """Save the tracking plan typed as JSON (empty: remove it); errors name the path."""
    if not ActionForm().validate_on_submit():
        abort(400)
    source = get_source(source_id)
    text = (request.form.get("plan") or "").strip()
    try:
        plan = orjson.loads(text) if text else None
        set_tracking_plan(current_actor(), source.id, plan)
    except orjson.JSONDecodeError as exc:
        flash(_("The tracking plan is not valid JSON: %(error)s", error=str(exc)), "error")
        return _render_source(source), 422
    except ValidationFailed as exc:
        flash(exc.message, "error")
        return _render_source(source), 422
    flash(_("Tracking plan saved.") if plan else _("Tracking plan removed."))
    return redirect(url_for("areas.source_detail", source_id=source.id))


# --- Audit -----------------------------------------------------------------------------------

AUDIT_OUTCOMES = {"ok": _l("Succeeded"), "denied": _l("Denied"), "refused": _l("Refused")}


def _audit_filters() -> tuple[audit_log.AuditFilters, dict]:
    """The filters of the query string (blank fields ignored), or none and the errors."""
    try:
        args = audit_log.AuditFilterSchema().load(request.args.to_dict())
    except ValidationError as exc:
        return audit_log.AuditFilters(), exc.messages
    return audit_log.filters_of(args), {}


@bp.route("/audit")
@requires("audit:view")
def audit():
    """The audit log newest first, filtered and keyset-paged; the first page checks the chain."""
    filters, errors = _audit_filters()
    before = request.args.get("before", type=int)
    rows = [] if errors else audit_log.search(filters, before_id=before, limit=PAGE_SIZE + 1)
    next_before = rows[PAGE_SIZE - 1].id if len(rows) > PAGE_SIZE else None
    rows = rows[:PAGE_SIZE]
    return render_template(
        "areas/audit.html",
        entries=rows,
        emails=audit_log.user_emails(rows),
        values=request.args,
        given=filters.given(),
        errors=errors,
        next_before=next_before,
        paged=bool(before),
        broken_at=None if before else verify_chain(),  # the whole chain: once, on page one
        outcomes=AUDIT_OUTCOMES,
        form=ActionForm(),
    ), (422 if errors else 200)


@bp.route("/audit/export.csv", methods=["POST"])
@requires("audit:view")
def audit_export():
    """Download the filtered log as CSV (a POST with a CSRF token: every export is audited)."""
    filters, errors = _audit_filters()
    if errors or not ActionForm().validate_on_submit():
        abort(400)
    return audit_log.csv_response(audit_log.export_rows(current_actor(), filters))


@bp.route("/settings")
@requires("settings:view")
def settings():
    """Show users and their roles."""
    users = db.session.scalars(sa.select(User).order_by(User.id)).all()
    return render_template("areas/settings.html", users=users)


# --- Violation reasons ------------------------------------------------------------------------
# Violations store the validator's English sentence and no code (a code column would need a
# migration), so the sentences cdp.ingest and jsonschema write are matched here. Translations
# leave out the offending value: it may be personal data, and the field is shown beside it.
VIOLATION_REASONS = [
    (r"each event must be a JSON object", _l("Each event must be a JSON object")),
    (r"event is larger than 32 KB", _l("The event is larger than 32 KB")),
    (r".* is not an ISO 8601 date-time", _l("Not an ISO 8601 date and time")),
    (
        r"userId, anonymousId or context\.externalIds is required",
        _l("userId, anonymousId or context.externalIds is required"),
    ),
    (
        r"(?P<type>\w+) value is on the block list: not used to link",
        _l("This %(type)s is on the block list: not used to link profiles"),
    ),
    (r"'(?P<name>.*)' is not in the tracking plan", _l("“%(name)s” is not in the tracking plan")),
    (r"not an e-mail address", _l("Not an e-mail address")),
    (r"not a valid phone number|not a phone number: .*", _l("Not a valid phone number")),
    (r"unknown identifier type '(?P<type>.*)'", _l("Unknown identifier type “%(type)s”")),
    (r"(?P<type>\w+) must be a string", _l("%(type)s must be a string")),
    (r"(?P<type>\w+) is empty", _l("%(type)s is empty")),
    (r"(?P<type>\w+) needs a collection .*", _l("%(type)s needs a namespace (e.g. the app ID)")),
    (
        r"(?P<type>\w+) is longer than (?P<limit>\d+) characters",
        _l("%(type)s is longer than %(limit)s characters"),
    ),
    # jsonschema's sentences (the message spec and tracking plans)
    (r"'(?P<name>.*)' is a required property", _l("The required field “%(name)s” is missing")),
    (r".* is not of type (?P<type>.*)", _l("Wrong type: expected %(type)s")),
    (r".* is not one of .*|.* was expected", _l("Not one of the allowed values")),
    (r".* is too long", _l("Too long")),
    (r".* is too short|.* should be non-empty", _l("Too short or empty")),
    (r"Additional properties are not allowed .*", _l("Holds fields that are not allowed here")),
    (r".* does not match .*", _l("Does not have the required format")),
    (r".* is not a '(?P<format>.*)'", _l("Not a valid %(format)s")),
    (r".* is not valid under any of the given schemas", _l("Matches none of the allowed forms")),
    (
        r".* is (?:greater|less) than the (?:maximum|minimum) of (?P<limit>.*)",
        _l("Outside the allowed range (limit %(limit)s)"),
    ),
]
_VIOLATION_PATTERNS = [(re.compile(p, re.DOTALL), label) for p, label in VIOLATION_REASONS]


@bp.app_template_global()
def violation_reason(reason: str) -> str:
    """The translated reason of a violation; a sentence not known here is shown as stored."""
    for pattern, label in _VIOLATION_PATTERNS:
        match = pattern.fullmatch(reason or "")
        if match:
            return label % match.groupdict() if match.groupdict() else str(label)
    return reason
