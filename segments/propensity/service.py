"""Model operations for a user: train, score, activate, export features, segment the top N %.

Each checks the permission, validates its input before any work (so bad input fails fast
with a clear message and nothing saved), runs as a JobRun with progress when it is long,
and is audited. The CLI runs them in the foreground; the API and the UI queue them on the
``models`` queue (``start_*``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from flask import current_app

from cdp import audit, jobs
from cdp.actors import Actor
from cdp.auth.permissions import require
from cdp.db import db, transaction
from cdp.exceptions import Conflict, ValidationFailed
from cdp.models import JobRun
from cdp.queue import enqueue
from segments import service as segment_service
from segments import tasks as segment_tasks
from segments.models import Segment
from segments.propensity import labels, registry, scoring, training
from segments.propensity.common import Progress, check_name, local_midnight, parse_horizon
from segments.propensity.features import compute_features
from segments.propensity.models import ModelVersion, PropensityScore

TRAIN_JOB, SCORE_JOB = "models-train", "models-score"
JOB_TIMEOUT = 3 * 3600


def _timezone() -> str:
    return current_app.config.get("TIMEZONE", "Asia/Shanghai")


def make_spec(
    name: str,
    target_event: str,
    horizon,
    cutoff,
    where=None,
    profile_kind: str = "patient",
    algorithm: str = "hgb",
) -> training.TrainSpec:
    """A training request from what a user typed; :raise ValidationFailed: naming the field."""
    if isinstance(cutoff, datetime):
        moment = cutoff
    else:
        moment = local_midnight(cutoff, _timezone())
    return training.TrainSpec(
        name=check_name(name),
        target=labels.check_target(target_event, where),
        horizon_days=parse_horizon(horizon),
        cutoff=moment,
        profile_kind=profile_kind,
        algorithm=algorithm,
    )


def _job_progress(job_id: int | None, also: Progress | None) -> Progress:
    def report(done: int, total: int, message: str) -> None:
        if job_id is not None:
            jobs.report_progress(job_id, int(done * 100 / total) if total else 0, message)
        if also is not None:
            also(done, total, message)

    return report


def _run(job_id: int | None, work: Callable, summary: Callable):
    """Run ``work`` under a JobRun: running, then succeeded with a summary, or failed."""
    if job_id is not None:
        jobs.mark_running(job_id, 100)
    try:
        result = work()
    except BaseException as exc:
        db.session.rollback()
        if job_id is not None:
            message = exc.message if hasattr(exc, "message") else f"{exc.__class__.__name__}: {exc}"
            jobs.mark_finished(job_id, f"failed: {message}"[:500], failed=True)
        raise
    if job_id is not None:
        jobs.report_progress(job_id, 100, "")
        jobs.mark_finished(job_id, summary(result)[:500])
    return result


def train_model(
    actor: Actor,
    spec: training.TrainSpec,
    activate: bool | None = None,
    progress: Progress | None = None,
    job_id: int | None = None,
) -> ModelVersion:
    """Train and store a version (see ``registry.save_version`` for ``activate``)."""
    require(actor, "models:edit")
    registry.check_question(spec)

    def work():
        result = training.train(spec, _job_progress(job_id, progress))
        return registry.save_version(actor, spec, result, activate)

    return _run(job_id, work, lambda v: f"version {v.version} of {spec.name} saved")


def start_training(actor: Actor, spec: training.TrainSpec, activate: bool | None = None) -> JobRun:
    """Check the request, then queue the training; :raise ValidationFailed: at once."""
    require(actor, "models:edit")
    registry.check_question(spec)
    training.check_spec(spec)
    params = {
        "name": spec.name,
        "target_event": spec.target.event,
        "where": spec.target.where,
        "horizon_days": spec.horizon_days,
        "cutoff": spec.cutoff.isoformat(),
        "profile_kind": spec.profile_kind,
        "algorithm": spec.algorithm,
        "activate": activate,
    }
    job = jobs.create_job(actor, TRAIN_JOB, params, total=100)
    with transaction():
        audit.record(actor, "model.train.start", "job", job.id, name=spec.name)
    enqueue("segments.propensity.tasks.train_job", job.id, queue="models", job_timeout=JOB_TIMEOUT)
    return job


def score_model(
    actor: Actor,
    name: str,
    as_of=None,
    out: Path | str | None = None,
    progress: Progress | None = None,
    job_id: int | None = None,
) -> scoring.Scored:
    """Score with the active version. Without ``as_of`` the scores are stored (and segments
    using the model refreshed); with it (a back-test) they are only returned / written."""
    require(actor, "models:edit")
    model = registry.get_model(name)
    version = registry.get_version(model)
    moment = None if as_of is None else local_midnight(as_of, _timezone(), "as_of")

    def work():
        scored = scoring.score(model, version, moment, _job_progress(job_id, progress))
        if moment is None:
            scoring.store(version, scored)
            refresh_dependent_segments(actor, name)
        if out is not None:
            scoring.write_csv(scored, out)
        with transaction():
            audit.record(
                actor,
                "model.score",
                "model",
                name,
                version=version.version,
                profiles=len(scored.frame),
                stored=moment is None,
                exported=out is not None,
            )
        return scored

    return _run(job_id, work, lambda s: f"{len(s.frame):,} profiles scored with v{version.version}")


def start_scoring(actor: Actor, name: str) -> JobRun:
    require(actor, "models:edit")
    model = registry.get_model(name)
    version = registry.get_version(model)
    job = jobs.create_job(actor, SCORE_JOB, {"name": name, "version": version.version}, total=100)
    with transaction():
        audit.record(actor, "model.score.start", "job", job.id, name=name)
    enqueue("segments.propensity.tasks.score_job", job.id, queue="models", job_timeout=JOB_TIMEOUT)
    return job


def refresh_dependent_segments(actor: Actor, name: str) -> list[int]:
    """Queue a refresh of the active segments whose rules use the model's scores."""
    key = f"model:{name}"
    ids = [
        s.id
        for s in db.session.scalars(sa.select(Segment).where(Segment.status == "active"))
        if key in (s.depends_on or [])
    ]
    if ids:
        segment_tasks.start_refresh(actor, ids)
    return ids


def create_top_segment(
    actor: Actor, name: str, top_percent: float, segment_name: str | None = None
) -> Segment:
    """A segment of the model's top N % (by the active version's stored scores)."""
    require(actor, "segments:edit")
    model = registry.get_model(name)
    version = registry.get_version(model)
    if not 0 < top_percent <= 100:
        raise ValidationFailed("top_percent must be more than 0 and at most 100", "top_percent")
    if not version.scored_count:
        raise Conflict(f"model {name!r} has no stored scores yet: score it first", "name")
    percent = int(top_percent) if float(top_percent).is_integer() else float(top_percent)
    definition = {"rule": {"type": "propensity", "model": name, "top_percent": percent}}
    description = (
        f"Top {percent} % of {name} ({model.target_event} within {model.horizon_days} days)"
    )
    segment = segment_service.create_segment(
        actor, segment_name or f"{name} top {percent}%", definition, description, realtime=False
    )
    segment_tasks.start_refresh(actor, [segment.id])
    return segment


def export_features(
    actor: Actor,
    cutoff,
    out: Path | str,
    profile_kind: str = "patient",
    target_event: str | None = None,
    horizon=None,
    where=None,
    progress: Progress | None = None,
) -> int:
    """Write the feature table as of ``cutoff`` (CSV, or Parquet by the file name); with a
    target, the target's history and (given a horizon) its label too. Audited."""
    require(actor, "models:edit")
    path = Path(out)
    if path.suffix.lower() not in (".csv", ".parquet"):
        raise ValidationFailed("the output file must end in .csv or .parquet", "out")
    moment = local_midnight(cutoff, _timezone())
    target = labels.check_target(target_event, where) if target_event else None
    end = None
    if target is not None and horizon is not None:
        end = moment + timedelta(days=parse_horizon(horizon))
        last = labels.data_end()
        if last is None or end > last:
            raise ValidationFailed(
                "horizon past the data end: labels would be incomplete", "horizon"
            )
    features = compute_features(
        moment, profile_kind, target, bool(target and target.health_data), progress
    )
    frame = features.frame[features.numeric + features.categorical].reset_index()
    if end is not None:
        frame["label"] = frame["profile_id"].isin(labels.labelled(target, moment, end)).astype(int)
    if path.suffix.lower() == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    with transaction():
        audit.record(
            actor, "features.export", "features", None, cutoff=moment.isoformat(), rows=len(frame)
        )
    return len(frame)


def stored_scores(version: ModelVersion, after_rank: int = 0, limit: int = 50) -> list[dict]:
    """A page of a version's stored scores, best first (keyset on rank)."""
    s = PropensityScore
    query = (
        sa.select(s.profile_id, s.score, s.rank, s.decile)
        .where(s.model_version_id == version.id, s.rank > after_rank)
        .order_by(s.rank)
        .limit(limit)
    )
    return [row._asdict() for row in db.session.execute(query)]
