"""Segments in the UI: list with overlap, visual builder with live count, detail with size chart,
members, refresh progress and CSV export."""

from __future__ import annotations

import orjson
from flask import Blueprint, abort, flash, jsonify, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from cdp.exceptions import CdpError
from segments import definition as definitions
from segments import membership, service, tasks
from segments.conditions import REGISTRY
from web.api.segments import csv_response
from web.session_auth import current_actor, requires
from web.ui.forms import ActionForm

bp = Blueprint("segment", __name__)

PAGE_SIZE = 50
EMPTY = {"rule": {"and": []}}
HEALTH_NOTICE = _l(
    "This rule uses health data (medicine purchases). Under PIPL it only counts profiles that "
    "gave separate consent to health-data processing."
)
GROUP_LABELS = {"profile": _l("Profile"), "events": _l("Events"), "reach": _l("Reach and consent")}


@bp.route("/segments")
@requires("segments:view")
def index():
    """Segments with size, refresh time and health-data flag; overlap of two of them."""
    segments = service.list_segments()
    result = pair = None
    a, b = request.args.get("a", type=int), request.args.get("b", type=int)
    if a and b:
        pair = (service.get_segment(a), service.get_segment(b))
        result = membership.overlap(a, b)
    return render_template(
        "segments/list.html", segments=segments, overlap=result, pair=pair, a=a, b=b
    )


def _form_values(segment=None) -> dict:
    return {
        "name": request.form.get("name", segment.name if segment else ""),
        "description": request.form.get("description", segment.description if segment else ""),
        "realtime": "realtime" in request.form
        if request.form
        else (segment.realtime if segment else True),
        "refresh_minutes": request.form.get(
            "refresh_minutes",
            segment.refresh_minutes if segment and segment.refresh_minutes else "",
        ),
        "definition": request.form.get(
            "definition",
            orjson.dumps(
                segment.definition if segment else EMPTY, option=orjson.OPT_INDENT_2
            ).decode(),
        ),
    }


def _render_builder(segment=None, problems=None, error=None, status=200):
    others = [s for s in service.list_segments() if segment is None or s.id != segment.id]
    return render_template(
        "segments/builder.html",
        segment=segment,
        values=_form_values(segment),
        problems=problems or [],
        error=error,
        config=builder_config(others),
        form=ActionForm(),
    ), status


def _parse_form() -> tuple[dict, dict]:
    """(definition, other fields) from the builder form; ValueError if the JSON is broken."""
    try:
        definition = orjson.loads(request.form.get("definition") or "")
    except orjson.JSONDecodeError as exc:
        raise ValueError(_("The definition is not valid JSON: %(error)s", error=str(exc))) from None
    minutes = request.form.get("refresh_minutes", "").strip()
    fields = {
        "name": request.form.get("name", ""),
        "description": request.form.get("description", ""),
        "realtime": "realtime" in request.form,
        "refresh_minutes": int(minutes) if minutes.isdigit() else None,
    }
    return definition, fields


def _save(segment=None):
    if not ActionForm().validate_on_submit():
        abort(400)
    try:
        definition, fields = _parse_form()
        if segment is None:
            saved = service.create_segment(current_actor(), definition=definition, **fields)
        else:
            saved = service.update_segment(
                current_actor(), segment.id, definition=definition, **fields
            )
    except ValueError as exc:
        return _render_builder(segment, error=str(exc), status=422)
    except definitions.DefinitionInvalid as exc:
        return _render_builder(segment, problems=exc.problems, status=422)
    except CdpError as exc:
        return _render_builder(segment, error=exc.message, status=exc.status)
    tasks.start_refresh(current_actor(), [saved.id])
    flash(_("Segment saved; its members are being computed."))
    return redirect(url_for("segment.detail", segment_id=saved.id))


@bp.route("/segments/new")
@requires("segments:edit")
def new():
    """The builder for a new segment."""
    return _render_builder()


@bp.route("/segments/new", methods=["POST"])
@requires("segments:edit")
def create():
    return _save()


@bp.route("/segments/<int:segment_id>/edit")
@requires("segments:edit")
def edit(segment_id: int):
    return _render_builder(service.get_segment(segment_id, include_archived=False))


@bp.route("/segments/<int:segment_id>/edit", methods=["POST"])
@requires("segments:edit")
def update(segment_id: int):
    return _save(service.get_segment(segment_id, include_archived=False))


@bp.route("/segments/preview", methods=["POST"])
@requires("segments:view")
def preview():
    """JSON for the builder's live count: count, sample, health data, or errors by path."""
    body = request.get_json(silent=True) or {}
    try:
        result = service.preview(current_actor(), body.get("definition"))
    except definitions.DefinitionInvalid as exc:
        # 200, not 422: an unfinished rule is the normal state of the builder, not an error.
        return jsonify(valid=False, errors=[p.as_dict() for p in exc.problems])
    result["valid"] = True
    result["notice"] = str(HEALTH_NOTICE) if result["health_data"] else None
    return jsonify(result)


@bp.route("/segments/<int:segment_id>")
@requires("segments:view")
def detail(segment_id: int):
    """A segment: rule, size over time, refresh jobs and a page of members."""
    segment = service.get_segment(segment_id)
    days = request.args.get("days", 30, type=int)
    days = days if days in (7, 30, 90, 365) else 30
    after = request.args.get("after", 0, type=int)
    page = membership.members(segment.id, after=after, limit=PAGE_SIZE)
    history = membership.size_history(segment.id, days)
    return render_template(
        "segments/detail.html",
        segment=segment,
        summary=describe(segment.definition["rule"]),
        history=history,
        chart=chart(history),
        days=days,
        members=page,
        next_after=page[-1]["profile_id"] if len(page) == PAGE_SIZE else None,
        jobs=tasks.recent_refresh_jobs(segment.id),
        definition=orjson.dumps(segment.definition, option=orjson.OPT_INDENT_2).decode(),
        form=ActionForm(),
        health_notice=HEALTH_NOTICE,
    )


@bp.route("/segments/<int:segment_id>/status")
@requires("segments:view")
def status(segment_id: int):
    """JSON: size and the latest refresh job, for the detail page to follow a running job."""
    segment = service.get_segment(segment_id)
    job = next(iter(tasks.recent_refresh_jobs(segment.id, limit=1)), None)
    return jsonify(
        size=segment.size,
        job=None
        if job is None
        else {"id": job.id, "status": job.status, "progress": job.progress, "total": job.total},
    )


@bp.route("/segments/<int:segment_id>/refresh", methods=["POST"])
@requires("segments:edit")
def refresh(segment_id: int):
    if not ActionForm().validate_on_submit():
        abort(400)
    service.get_segment(segment_id, include_archived=False)
    job = tasks.start_refresh(current_actor(), [segment_id])
    flash(_("Refresh started (job #%(id)s).", id=job.id))
    return redirect(url_for("segment.detail", segment_id=segment_id))


@bp.route("/segments/<int:segment_id>/archive", methods=["POST"])
@requires("segments:edit")
def archive(segment_id: int):
    if not ActionForm().validate_on_submit():
        abort(400)
    try:
        service.archive_segment(current_actor(), segment_id)
    except CdpError as exc:
        flash(exc.message, "error")
        return redirect(url_for("segment.detail", segment_id=segment_id))
    flash(_("Segment archived."))
    return redirect(url_for("segment.index"))


@bp.route("/segments/<int:segment_id>/export.csv")
@requires("segments:export")
def export(segment_id: int):
    """Current members as CSV (profile ids and non-personal fields); audited."""

    return csv_response(service.export_members(current_actor(), segment_id), segment_id)


# -- the builder's vocabulary, the rule summary and the size chart ---------------------------

TYPE_LABELS = {
    "profile_kind": _l("Profile kind"),
    "trait": _l("Trait"),
    "birthday": _l("Birthday within N days"),
    "age": _l("Age (from date of birth)"),
    "date_trait": _l("Date trait relative to today"),
    "event_count": _l("Number of events"),
    "event_sum": _l("Sum of an event property"),
    "event_last": _l("Last time of an event"),
    "event_first": _l("First time of an event"),
    "refill_lapse": _l("Refill lapse (no repeat purchase after run-out)"),
    "identifier": _l("Has an identifier"),
    "reachable": _l("Reachable on a channel"),
    "consent": _l("Consent"),
    "segment": _l("In another segment"),
    "propensity": _l("Propensity score"),
    "journey": _l("Journey state"),
    "coupon": _l("Coupon state"),
    "points": _l("Points balance"),
    "knowledge": _l("Doctor's knowledge in a dimension"),
}
FIELD_LABELS = {
    "kind": _l("Kind"),
    "model": _l("Model"),
    "journey_id": _l("Journey"),
    "campaign_id": _l("Coupon campaign"),
    "state": _l("State"),
    "dimension": _l("Knowledge dimension"),
    "weak": _l("Weak"),
    "top_percent": _l("Top share, per cent"),
    "trait": _l("Trait"),
    "op": _l("Comparison"),
    "value": _l("Value"),
    "within_days": _l("Within (days)"),
    "days": _l("Days"),
    "event": _l("Event name(s)"),
    "where": _l("Property filters (JSON)"),
    "within": _l("Time window"),
    "property": _l("Property"),
    "drug_codes": _l("Drug codes"),
    "grace_days": _l("Grace days after run-out"),
    "lookback_days": _l("Look back (days)"),
    "identifier": _l("Identifier type"),
    "namespace": _l("Namespace (app id)"),
    "channel": _l("Channel"),
    "app_id": _l("App id"),
    "purpose": _l("Purpose"),
    "granted": _l("Granted"),
    "segment_id": _l("Segment"),
}
VALUE_LABELS = {
    "equals": _l("equals"),
    "not_equals": _l("does not equal"),
    "in": _l("is one of"),
    "not_in": _l("is none of"),
    "exists": _l("is set"),
    "not_exists": _l("is not set"),
    "contains": _l("contains"),
    "gt": _l("greater than"),
    "gte": _l("at least"),
    "lt": _l("less than"),
    "lte": _l("at most"),
    "between": _l("between"),
    "within_last_days": _l("within the last N days"),
    "more_than_days_ago": _l("more than N days ago"),
    "within_next_days": _l("within the next N days"),
    "more_than_days_ahead": _l("more than N days ahead"),
    "patient": _l("Patient"),
    "hcp": _l("Doctor"),
    "marketing": _l("Marketing"),
    "health_data": _l("Health data (PIPL separate consent)"),
    "third_party_sharing": _l("Sharing with third parties"),
    "automated_marketing": _l("Automated marketing"),
    "guardian": _l("Guardian consent"),
    "wechat": _l("WeChat official account"),
    "miniprogram": _l("Mini-program"),
    "sms": _l("SMS"),
    "email": _l("E-mail"),
    "phone": _l("Phone"),
    "*": _l("Any channel"),
}
UI_TEXT = {
    "and": _l("All of"),
    "or": _l("Any of"),
    "not": _l("None of"),
    "add_condition": _l("+ Condition"),
    "add_group": _l("+ Group"),
    "remove": _l("Remove"),
    "all_time": _l("All time"),
    "last_days": _l("Last N days"),
    "yes": _l("Yes"),
    "no": _l("No"),
    "counting": _l("Counting…"),
    "profiles": _l("profiles match"),
    "sample": _l("Sample (profile ids)"),
    "invalid": _l("The definition is not valid yet:"),
    "failed": _l("The preview failed."),
    "list_hint": _l("separate several with commas"),
}
GROUP_TEXT = {"and": _l("All of"), "or": _l("Any of"), "not": _l("Not")}


def builder_config(others) -> dict:
    """What the builder script needs: each condition's schema and the translated labels."""
    schema = definitions.build_schema()
    return {
        "types": [
            {
                "type": name,
                "label": str(TYPE_LABELS.get(name, name)),
                "group": str(GROUP_LABELS.get(cls.group, cls.group)),
                "schema": cls.schema,
                "example": cls.example,
            }
            for name, cls in REGISTRY.items()
        ],
        "defs": {key: schema["$defs"][key] for key in ("path", "window")},
        "fields": {key: str(value) for key, value in FIELD_LABELS.items()},
        "values": {key: str(value) for key, value in VALUE_LABELS.items()},
        "text": {key: str(value) for key, value in UI_TEXT.items()},
        "segments": [{"id": s.id, "name": s.name} for s in others],
        "preview_url": url_for("segment.preview"),
    }


def describe(node: dict) -> dict:
    """A rule as a tree of translated, human-readable lines for the detail page."""
    for key in ("and", "or"):
        if key in node:
            return {"group": str(GROUP_TEXT[key]), "children": [describe(c) for c in node[key]]}
    if "not" in node:
        return {"group": str(GROUP_TEXT["not"]), "children": [describe(node["not"])]}
    parts = []
    for key, value in node.items():
        if key == "type":
            continue
        if key == "within" and isinstance(value, dict) and "last_days" in value:
            value = _("last %(n)s days", n=value["last_days"])
        elif isinstance(value, str | bool | int | float) and str(value) in VALUE_LABELS:
            value = str(VALUE_LABELS[str(value)])
        elif not isinstance(value, str):
            value = orjson.dumps(value).decode()
        parts.append(f"{FIELD_LABELS.get(key, key)}: {value}")
    return {"label": str(TYPE_LABELS.get(node["type"], node["type"])), "text": "; ".join(parts)}


def chart(history: list[dict], width: int = 640, height: int = 160) -> dict:
    """Coordinates of an inline SVG line chart of the size at the end of each day."""
    top = max((day["size"] for day in history), default=0) or 1
    step = width / max(len(history) - 1, 1)
    points = [
        (round(i * step, 1), round(height - day["size"] / top * (height - 10), 1))
        for i, day in enumerate(history)
    ]
    line = " ".join(f"{x},{y}" for x, y in points)
    return {
        "width": width,
        "height": height,
        "line": line,
        "area": f"0,{height} {line} {width},{height}",
        "max": max((day["size"] for day in history), default=0),
        "first": history[0]["day"] if history else "",
        "last": history[-1]["day"] if history else "",
        "dots": [(x, y, day) for (x, y), day in zip(points, history, strict=True)],
    }
