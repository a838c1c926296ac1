"""Journeys in the UI: list, create from a starter, graph builder with live validation,
lifecycle, version history with diff, per-step statistics and test mode."""

from __future__ import annotations

import difflib

import orjson
from flask import Blueprint, abort, flash, jsonify, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from cdp.content.library import list_items
from cdp.content.schemas import KIND_CHANNELS
from cdp.exceptions import CdpError
from cdp.loyalty.campaigns import list_campaigns
from cdp.loyalty.common import setting as loyalty_setting
from journeys import service, stats, validation
from journeys.dry_run import dry_run as who_would_enter
from segments import service as segment_service
from web.labels import can
from web.session_auth import current_actor, requires
from web.ui.content import CHANNEL_NAMES, GUARD_LABELS
from web.ui.forms import ActionForm

bp = Blueprint("journey", __name__)

STATUS_LABELS = {
    "draft": _l("Draft"),
    "published": _l("Published"),
    "paused": _l("Paused"),
    "archived": _l("Archived"),
}
STEP_LABELS = {
    "wait": _l("Wait"),
    "wait_for_event": _l("Wait for an event"),
    "branch": _l("Branch"),
    "split": _l("Random split"),
    "send": _l("Send a message"),
    "issue_coupon": _l("Issue a coupon"),
    "award_points": _l("Award points"),
    "update_trait": _l("Update a trait"),
    "webhook": _l("Call a webhook"),
    "invite_to_meeting": _l("Invite to a meeting"),
    "exit": _l("Exit"),
}
COUNT_LABELS = {
    "entered": _l("Entered"),
    "active": _l("In the journey now"),
    "now": _l("In this step now"),
    "completed": _l("Completed"),
    "exited": _l("Exited"),
    "converted": _l("Converted"),
    "failed": _l("Failed"),
    "sent": _l("Sent"),
    "delivered": _l("Delivered"),
    "skipped": _l("Skipped"),
    "deferred": _l("Deferred"),
    "preview": _l("Preview (test mode)"),
    "global_control": _l("Global control group"),
}
# Skip and exit reasons the engine records (journeys.engine); unknown codes show as they are.
REASON_LABELS = {
    **GUARD_LABELS,
    "quiet_hours": _l("Quiet hours"),
    "frequency_cap": _l("Frequency cap"),
    "instance_exited": _l("The person left the journey first"),
    "journey_archived": _l("Journey archived"),
    "pii_trait": _l("Personal data may not be written to a trait"),
    "exit_event": _l("Exit event"),
    "segment_exit": _l("Left the segment"),
    "missing_date": _l("The date trait is missing"),
    "global_control": _l("Global control group"),
    "archived": _l("Journey archived"),
    "holdout": _l("Holdout"),
    "worker_lost": _l("Worker lost"),
    "unknown": _l("Unknown"),
}
STARTERS = {
    "empty": _l("Empty journey"),
    "refill": _l("Refill reminder (per medicine)"),
    "welcome": _l("New-follower welcome series"),
}
ACTIONS = {
    "publish": _l("Published as version %(number)s."),
    "pause": _l("Journey paused: nobody advances until it is resumed."),
    "resume": _l("Journey resumed."),
    "archive": _l("Journey archived."),
}


@bp.app_context_processor
def _labels() -> dict:
    return {
        "journey_status_label": lambda s: STATUS_LABELS.get(s, s),
        "step_type_label": lambda t: STEP_LABELS.get(t, t),
        "count_label": lambda c: COUNT_LABELS.get(c, c),
        "reason_label": lambda r: REASON_LABELS.get(r, r),
    }


def pretty(definition) -> str:
    return orjson.dumps(definition, option=orjson.OPT_INDENT_2).decode()


@bp.route("/journeys")
@requires("journeys:view")
def index():
    """Journeys with status, live version and entered / active / converted counts."""
    status = request.args.get("status") if request.args.get("status") in STATUS_LABELS else None
    rows = service.list_journeys(status=status)
    totals = {j.id: stats.journey_stats(j.id)["totals"] for j in rows}
    return render_template(
        "journeys/list.html", journeys=rows, totals=totals, status=status, statuses=STATUS_LABELS
    )


def _render_new(error=None, status=200):
    page = render_template("journeys/new.html", starters=STARTERS, form=ActionForm(), error=error)
    return page, status


@bp.route("/journeys/new")
@requires("journeys:edit")
def new():
    return _render_new()


@bp.route("/journeys/new", methods=["POST"])
@requires("journeys:edit")
def create():
    """Create a draft from a starter definition and open it in the builder."""
    starter = request.form.get("starter", "empty")
    if not ActionForm().validate_on_submit() or starter not in STARTERS:
        abort(400)
    name, description = request.form.get("name", ""), request.form.get("description", "")
    try:
        journey = service.create_journey(
            current_actor(), name, starter_definition(starter), description
        )
    except CdpError as exc:
        return _render_new(exc.message, exc.status)
    flash(_("Draft created. Build the steps, then publish."))
    return redirect(url_for("journey.detail", journey_id=journey.id))


def _step_stats(journey) -> dict:
    if journey.live_version is None:
        return {}
    steps = stats.journey_stats(journey.id)["steps"]
    return {
        step_id: {
            "entered": row.get("entered", 0),
            "now": row.get("now", 0),
            "sent": row.get("sent", 0),
            "skipped": sum((row.get("skipped") or {}).values()),
            "outcomes": row.get("outcomes", {}),  # how many took each edge
        }
        for step_id, row in steps.items()
    }


def builder_config(journey) -> dict:
    """What the builder script needs: step types, choices and each step's counts.

    Its translated field labels and texts come from the template (data-text)."""
    content = list_items(status="approved", limit=500)
    return {
        "types": [{"type": key, "label": str(label)} for key, label in STEP_LABELS.items()],
        "channels": [
            {"value": c, "label": str(CHANNEL_NAMES[c])} for c in ("wechat", "miniprogram", "sms")
        ],
        "content": [
            {"id": i.id, "name": i.name, "kind": i.kind, "channels": KIND_CHANNELS[i.kind]}
            for i in content
        ],
        "campaigns": [{"id": c.id, "name": c.name, "status": c.status} for c in list_campaigns()],
        "actions": sorted(loyalty_setting("LOYALTY_ACTION_POINTS")),
        "segments": [{"id": s.id, "name": s.name} for s in segment_service.list_segments()],
        "validate_url": url_for("journey.validate"),
        "editable": can("journeys:edit") and journey.status != "archived",
        "stats": _step_stats(journey),
    }


def _render(journey, tab: str, status: int = 200, **extra):
    return render_template(
        f"journeys/{tab}.html",
        journey=journey,
        tab=tab,
        form=ActionForm(),
        versions=service.list_versions(journey.id),
        **extra,
    ), status


def _render_builder(journey, status=200, problems=None, error=None, values=None):
    values = values or {
        "name": journey.name,
        "description": journey.description,
        "definition": pretty(journey.draft),
    }
    return _render(
        journey,
        "builder",
        status,
        values=values,
        problems=problems or [],
        error=error,
        config=builder_config(journey),
        draft_problems=validation.validate(journey.draft),
    )


@bp.route("/journeys/<int:journey_id>")
@requires("journeys:view")
def detail(journey_id: int):
    """The builder: the draft as a graph with step forms, JSON editor and lifecycle buttons."""
    return _render_builder(service.get_journey(journey_id))


@bp.route("/journeys/<int:journey_id>", methods=["POST"])
@requires("journeys:edit")
def save(journey_id: int):
    """Save the draft (name, description, definition); a draft may still have problems."""
    journey = service.get_journey(journey_id)
    if not ActionForm().validate_on_submit():
        abort(400)
    values = {key: request.form.get(key, "") for key in ("name", "description", "definition")}
    try:
        definition = orjson.loads(values["definition"])
    except orjson.JSONDecodeError as exc:
        error = _("The definition is not valid JSON: %(error)s", error=str(exc))
        return _render_builder(journey, 422, error=error, values=values)
    try:
        service.update_journey(
            current_actor(),
            journey.id,
            name=values["name"].strip(),
            description=values["description"],
            definition=definition,
        )
    except CdpError as exc:
        problems = getattr(exc, "problems", None)
        return _render_builder(
            journey, exc.status, problems=problems, error=exc.message, values=values
        )
    flash(_("Draft saved."))
    return redirect(url_for("journey.detail", journey_id=journey.id))


@bp.route("/journeys/validate", methods=["POST"])
@requires("journeys:view")
def validate():
    """JSON for the builder's live validation: every problem with its path."""
    body = request.get_json(silent=True) or {}
    problems = validation.validate(body.get("definition"))
    # 200 either way: an unfinished journey is the builder's normal state, not an error.
    return jsonify(valid=not problems, problems=problems)


def parse_mapping(text: str) -> dict[str, str]:
    """``old: new`` lines (or commas) as a step-id mapping for migrating people inside."""
    mapping = {}
    for part in text.replace(",", "\n").splitlines():
        old, sep, new = part.partition(":")
        if sep and old.strip() and new.strip():
            mapping[old.strip()] = new.strip()
    return mapping


@bp.route(
    "/journeys/<int:journey_id>/<any(publish, pause, resume, archive):action>", methods=["POST"]
)
@requires("journeys:publish")
def lifecycle(journey_id: int, action: str):
    """Publish the draft as a new version, or pause, resume or archive the journey."""
    journey = service.get_journey(journey_id)
    if not ActionForm().validate_on_submit():
        abort(400)
    actor = current_actor()
    try:
        if action == "publish":
            migrate = None
            if request.form.get("migrate"):
                migrate = parse_mapping(request.form.get("mapping", ""))
            note = request.form.get("note", "").strip()
            version = service.publish(actor, journey.id, migrate=migrate, note=note)
            flash(str(ACTIONS[action]) % {"number": version.number})
        else:
            getattr(service, action)(actor, journey.id)
            flash(str(ACTIONS[action]))
    except CdpError as exc:
        problems = getattr(exc, "problems", None)
        if exc.status == 404:
            raise
        if problems:
            return _render_builder(journey, exc.status, problems=problems)
        flash(_("Not done: %(reason)s", reason=exc.message), "error")
    return redirect(url_for("journey.detail", journey_id=journey.id))


def diff_lines(old, new, old_name: str, new_name: str) -> list[tuple[str, str]]:
    """A unified diff of two definitions as pretty JSON, each line with its kind for colour."""
    before = pretty(old).splitlines() if old is not None else []
    after = pretty(new).splitlines()
    lines = []
    for line in difflib.unified_diff(before, after, old_name, new_name, lineterm=""):
        if line.startswith(("---", "+++")):
            kind = "file"
        elif line.startswith("@@"):
            kind = "hunk"
        else:
            kind = {"+": "add", "-": "del"}.get(line[:1], "same")
        lines.append((kind, line))
    return lines


@bp.route("/journeys/<int:journey_id>/versions")
@requires("journeys:view")
def versions(journey_id: int):
    """Published versions, and the diff of one of them (or the draft) against the one before."""
    journey = service.get_journey(journey_id)
    history = service.list_versions(journey.id)
    chosen = request.args.get("diff", str(history[0].number) if history else "draft")
    if chosen == "draft":
        before = history[0] if history else None
        after, name = journey.draft, _("draft")
    elif chosen.isdigit():
        version = service.get_version(journey.id, int(chosen))
        number = version.number
        before = service.get_version(journey.id, number - 1) if number > 1 else None
        after, name = version.definition, _("version %(n)s", n=number)
    else:
        abort(404)
    base = _("version %(n)s", n=before.number) if before else _("(nothing)")
    diff = diff_lines(before.definition if before else None, after, base, name)
    return _render(journey, "versions", diff=diff, chosen=chosen)


@bp.route("/journeys/<int:journey_id>/stats")
@requires("journeys:view")
def stats_view(journey_id: int):
    """Per-step funnel, skip and exit reasons, and goal conversion against the holdout."""
    journey = service.get_journey(journey_id)
    version = request.args.get("version", type=int)
    report = stats.journey_stats(journey.id, version=version)
    definition = journey.draft
    if version or journey.live_version:
        definition = service.get_version(journey.id, version or journey.live_version).definition
    totals = report["totals"]
    cards = {
        "entered": totals.get("entered", 0),
        "active": totals.get("active", 0) + totals.get("waiting", 0),  # in the journey now
        **{key: totals.get(key, 0) for key in ("completed", "exited", "failed", "converted")},
    }
    if totals.get("global_control"):  # would-be entrants kept out for the programme's control
        cards["global_control"] = totals["global_control"]
    steps = definition.get("steps", [])
    return _render(journey, "stats", report=report, cards=cards, version=version, steps=steps)


def _render_test(journey, status=200, dry=None, error=None):
    deliveries = stats.deliveries(journey_id=journey.id, status="preview", limit=50)
    return _render(journey, "test", status, dry=dry, error=error, previews=deliveries)


@bp.route("/journeys/<int:journey_id>/test")
@requires("journeys:view")
def test_mode(journey_id: int):
    """Test mode: only chosen profiles enter and sends go to the preview log; dry run."""
    return _render_test(service.get_journey(journey_id))


@bp.route("/journeys/<int:journey_id>/test", methods=["POST"])
@requires("journeys:edit")
def set_test_mode(journey_id: int):
    journey = service.get_journey(journey_id)
    if not ActionForm().validate_on_submit():
        abort(400)
    raw = request.form.get("profile_ids", "").replace("，", ",")
    parts = [p.strip() for p in raw.split(",") if p.strip()]
    if not all(p.isdigit() for p in parts):
        error = _("Profile ids are numbers separated by commas.")
        return _render_test(journey, 422, error=error)
    enabled = request.form.get("enabled") == "on"
    try:
        service.set_test_mode(
            current_actor(), journey.id, enabled=enabled, profile_ids=[int(p) for p in parts]
        )
    except CdpError as exc:
        return _render_test(journey, exc.status, error=exc.message)
    flash(_("Test mode is on.") if enabled else _("Test mode is off."))
    return redirect(url_for("journey.test_mode", journey_id=journey.id))


@bp.route("/journeys/<int:journey_id>/dry-run", methods=["POST"])
@requires("journeys:edit")
def dry_run(journey_id: int):
    """Who would enter now, without entering anyone."""
    journey = service.get_journey(journey_id)
    if not ActionForm().validate_on_submit():
        abort(400)
    try:
        result = who_would_enter(journey.id)
    except CdpError as exc:
        return _render_test(journey, exc.status, error=exc.message)
    return _render_test(journey, dry=result)


def _first_content(channel: str) -> int | None:
    kinds = [kind for kind, channels in KIND_CHANNELS.items() if channel in channels]
    return next((i.id for i in list_items(status="approved", limit=500) if i.kind in kinds), None)


def starter_definition(name: str) -> dict:
    """A draft to start from (templates/journeys/_starter.json.html), labels translated.

    Send steps get the first approved content item for their channel; without one the
    content is left out and the validator asks the marketer to pick it.
    """
    text = render_template(
        "journeys/_starter.json.html",
        name=name,
        wechat=_first_content("wechat"),
        miniprogram=_first_content("miniprogram"),
    )
    definition = orjson.loads(text)
    # Jinja's tojson sorts keys; put them back in reading order for the JSON editor.
    steps = [
        {"id": s["id"], "type": s["type"], **{k: v for k, v in s.items() if v is not None}}
        for s in definition.pop("steps")
    ]
    start = definition.pop("start")
    return {**dict(sorted(definition.items(), key=_reading_order)), "start": start, "steps": steps}


def _reading_order(item) -> int:
    order = ("category", "audience", "trigger", "entry", "exit", "goal")
    return order.index(item[0]) if item[0] in order else len(order)
