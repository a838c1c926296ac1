"""Models in the UI: list and training form, a model's versions with metrics, lift and
calibration charts, score distribution, scoring and "segment of the top N %"."""

from __future__ import annotations

import orjson
import sqlalchemy as sa
from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _

from cdp.db import db
from cdp.exceptions import CdpError, NotFound
from cdp.models import JobRun
from segments.propensity import registry, scoring, service
from segments.propensity.models import ALGORITHMS
from web.session_auth import current_actor, requires
from web.ui.forms import ActionForm

bp = Blueprint("models_ui", __name__)

FORM_FIELDS = ("name", "target_event", "where", "horizon", "cutoff", "profile_kind", "algorithm")
DEFAULTS = {"horizon": "90d", "profile_kind": "patient", "algorithm": "hgb", "where": ""}


def recent_jobs(name: str | None = None, limit: int = 8) -> list[JobRun]:
    query = sa.select(JobRun).where(JobRun.kind.in_((service.TRAIN_JOB, service.SCORE_JOB)))
    found = []
    for job in db.session.scalars(query.order_by(JobRun.id.desc()).limit(100)):
        if name is None or (job.params or {}).get("name") == name:
            found.append(job)
        if len(found) == limit:
            break
    return found


def _render_index(values=None, error=None, status=200):
    rows = []
    for model in registry.list_models():
        found = registry.versions(model)
        rows.append((model, found, next((v for v in found if v.active), None)))
    return render_template(
        "models/list.html",
        rows=rows,
        values=values or DEFAULTS,
        error=error,
        algorithms=ALGORITHMS,
        jobs=recent_jobs(),
        form=ActionForm(),
        active_nav="models_ui.index",
    ), status


@bp.route("/models")
@requires("models:view")
def index():
    """Models with their active version, and the training form."""
    return _render_index()


@bp.route("/models/train", methods=["POST"])
@requires("models:edit")
def train():
    """Check the request and queue the training job (errors are shown on the form)."""
    if not ActionForm().validate_on_submit():
        abort(400)
    values = {key: request.form.get(key, "").strip() for key in FORM_FIELDS}
    try:
        where = orjson.loads(values["where"]) if values["where"] else None
    except orjson.JSONDecodeError as exc:
        return _render_index(values, _("The filters are not valid JSON: %(error)s", error=exc), 422)
    try:
        spec = service.make_spec(
            values["name"],
            values["target_event"],
            values["horizon"],
            values["cutoff"],
            where,
            values["profile_kind"] or "patient",
            values["algorithm"] or "hgb",
        )
        job = service.start_training(current_actor(), spec)
    except CdpError as exc:
        return _render_index(values, exc.message, exc.status)
    flash(_("Training started (job #%(id)s).", id=job.id))
    return redirect(url_for("models_ui.index"))


@bp.route("/models/<name>")
@requires("models:view")
def detail(name: str):
    """A model: versions, the chosen version's metrics and charts, scores, jobs."""
    model = registry.get_model(name)
    found = registry.versions(model)
    if not found:
        raise NotFound("this model has no version", "name")
    number = request.args.get("v", type=int)
    active = next((v for v in found if v.active), None)
    chosen = next((v for v in found if v.version == number), None) or active or found[0]
    metrics = chosen.metrics or {}
    stored = scoring.stored_distribution(chosen) if chosen.scored_count else None
    return render_template(
        "models/detail.html",
        model=model,
        versions=found,
        active=active,
        chosen=chosen,
        metrics=metrics,
        lift=lift_chart(metrics.get("lift") or [], metrics.get("baseline_lift") or []),
        calibration=calibration_chart((metrics.get("calibration") or {}).get("bins") or []),
        importances=bar_rows(metrics.get("importances") or []),
        distribution=histogram(stored or metrics.get("distribution") or []),
        distribution_stored=stored is not None,
        jobs=recent_jobs(name),
        form=ActionForm(),
        active_nav="models_ui.index",
    )


def _post(name: str, work, message):
    """Run a change from a button; flash ``message(result)`` or the domain error."""
    if not ActionForm().validate_on_submit():
        abort(400)
    try:
        result = work()
    except CdpError as exc:
        flash(exc.message, "error")
    else:
        flash(message(result))
    return redirect(url_for("models_ui.detail", name=name))


@bp.route("/models/<name>/versions/<int:number>/activate", methods=["POST"])
@requires("models:edit")
def activate(name: str, number: int):
    return _post(
        name,
        lambda: registry.activate(current_actor(), name, number),
        lambda _v: _("Version %(n)s is active; score it to use it in segments.", n=number),
    )


@bp.route("/models/<name>/score", methods=["POST"])
@requires("models:edit")
def score(name: str):
    return _post(
        name,
        lambda: service.start_scoring(current_actor(), name),
        lambda job: _("Scoring started (job #%(id)s).", id=job.id),
    )


@bp.route("/models/<name>/segment", methods=["POST"])
@requires("segments:edit")
def segment(name: str):
    """Create a segment of the top N % and open it."""
    if not ActionForm().validate_on_submit():
        abort(400)
    try:
        top = float(request.form.get("top_percent", ""))
    except ValueError:
        flash(_("The top share must be a number."), "error")
        return redirect(url_for("models_ui.detail", name=name))
    try:
        created = service.create_top_segment(
            current_actor(), name, top, request.form.get("segment_name", "").strip() or None
        )
    except CdpError as exc:
        flash(exc.message, "error")
        return redirect(url_for("models_ui.detail", name=name))
    flash(_("Segment created; its members are being computed."))
    return redirect(url_for("segment.detail", segment_id=created.id))


# -- inline SVG charts (coordinates computed here, drawn by the templates) -------------------

W, H = 560, 200


def lift_chart(lift: list[dict], baseline: list[dict]) -> dict:
    """Bars of the model's lift per decile, the baseline's as a line, and lift 1 marked."""
    top = max([row.get("lift") or 0 for row in lift + baseline] + [1.0]) * 1.1
    step = W / max(len(lift), 1)

    def y(value) -> float:
        return round(H - (value or 0) / top * H, 1)

    bars = [
        {
            "x": round(i * step + 4, 1),
            "y": y(row.get("lift")),
            "w": round(step - 8, 1),
            "h": round(H - y(row.get("lift")), 1),
            "row": row,
        }
        for i, row in enumerate(lift)
    ]
    points = " ".join(
        f"{round((i + 0.5) * step, 1)},{y(r.get('lift'))}" for i, r in enumerate(baseline)
    )
    return {"w": W, "h": H, "bars": bars, "baseline": points, "one": y(1.0), "max": round(top, 2)}


def calibration_chart(bins: list[dict], size: int = 240) -> dict:
    """Observed rate against mean predicted probability per bin, with the diagonal."""

    def at(value) -> float:
        return round((value or 0) * size, 1)

    dots = [
        {"x": at(b["predicted"]), "y": round(size - at(b["observed"]), 1), "bin": b} for b in bins
    ]
    return {"size": size, "dots": dots, "line": " ".join(f"{d['x']},{d['y']}" for d in dots)}


def bar_rows(importances: list[dict], width: int = 320) -> list[dict]:
    top = max([row["importance"] for row in importances] + [1e-9])
    return [{**row, "w": round(max(row["importance"], 0) / top * width, 1)} for row in importances]


def histogram(bins: list[dict]) -> dict:
    top = max([b["count"] for b in bins] + [1])
    step = W / max(len(bins), 1)
    bars = [
        {
            "x": round(i * step + 1, 1),
            "w": round(step - 2, 1),
            "h": round(b["count"] / top * (H - 10), 1),
            "bin": b,
        }
        for i, b in enumerate(bins)
    ]
    for bar in bars:
        bar["y"] = round(H - bar["h"], 1)
    return {"w": W, "h": H, "bars": bars, "max": top, "total": sum(b["count"] for b in bins)}
