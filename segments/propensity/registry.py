"""The model registry: every trained version with its metrics, artifact and checksum.

Fitted pipelines are serialised with joblib into ``<instance>/models/<name>/`` and their
SHA-256 is stored with the version; a file whose checksum differs (edited, swapped,
truncated) is refused before it is unpickled. Loading a pickle runs code, so the
checksum is what makes the file on disk trustworthy: keep the database and the instance
folder under the same access control.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import joblib
import sklearn
import sqlalchemy as sa
from flask import current_app
from sqlalchemy.exc import IntegrityError

from cdp import audit
from cdp.actors import Actor
from cdp.auth.permissions import require
from cdp.db import db, transaction, utcnow
from cdp.exceptions import Conflict, NotFound
from cdp.models import User
from segments.propensity.models import ModelVersion, PropensityModel
from segments.propensity.training import TrainResult, TrainSpec

ARTIFACT_FORMAT = 1


class ArtifactRefused(Conflict):
    """The stored pipeline is missing or fails its checksum: it is not loaded."""


def models_dir() -> Path:
    return Path(current_app.instance_path) / "models"


def get_model(name: str) -> PropensityModel:
    model = db.session.scalar(sa.select(PropensityModel).where(PropensityModel.name == name))
    if model is None:
        raise NotFound(f"no model called {name!r}", "name")
    return model


def list_models() -> list[PropensityModel]:
    return list(db.session.scalars(sa.select(PropensityModel).order_by(PropensityModel.name)))


def versions(model: PropensityModel) -> list[ModelVersion]:
    query = sa.select(ModelVersion).where(ModelVersion.model_id == model.id)
    return list(db.session.scalars(query.order_by(ModelVersion.version.desc())))


def get_version(model: PropensityModel, number: int | None = None) -> ModelVersion:
    """A version by number, or the active one (None)."""
    query = sa.select(ModelVersion).where(ModelVersion.model_id == model.id)
    query = query.where(
        ModelVersion.active.is_(True) if number is None else ModelVersion.version == number
    )
    version = db.session.scalar(query)
    if version is None:
        what = "an active version" if number is None else f"a version {number}"
        raise NotFound(f"model {model.name!r} has no {what}", "version")
    return version


def active_versions() -> list[tuple[PropensityModel, ModelVersion]]:
    query = sa.select(PropensityModel, ModelVersion).join(
        ModelVersion, ModelVersion.model_id == PropensityModel.id
    )
    return list(db.session.execute(query.where(ModelVersion.active.is_(True))).tuples())


def describe_actor(actor: Actor) -> str:
    user = db.session.get(User, actor.user_id) if actor.user_id else None
    if user is not None:
        return user.email[:120]
    return f"{actor.kind}:{actor.request_id}" if actor.request_id else actor.kind


def _question(spec: TrainSpec) -> dict:
    return {
        "target_event": spec.target.event,
        "target_where": list(spec.target.where),
        "horizon_days": spec.horizon_days,
        "profile_kind": spec.profile_kind,
    }


def check_question(spec: TrainSpec) -> None:
    """A model name stands for one question; retraining may change the cutoff and algorithm.

    :raise Conflict: the name already predicts something else.
    """
    model = db.session.scalar(sa.select(PropensityModel).where(PropensityModel.name == spec.name))
    if model is None:
        return
    wanted = _question(spec)
    existing = {key: getattr(model, key) for key in wanted}
    if existing != wanted:
        changed = ", ".join(key for key in wanted if wanted[key] != existing[key])
        raise Conflict(
            f"model {spec.name!r} already predicts {model.target_event!r} within "
            f"{model.horizon_days} days for {model.profile_kind} profiles ({changed} differ); "
            "train under a new name",
            "name",
        )


def _serialise(result: TrainResult) -> bytes:
    buffer = io.BytesIO()
    payload = {
        "format": ARTIFACT_FORMAT,
        "pipeline": result.pipeline,
        "features": result.features,
        "sklearn": sklearn.__version__,
    }
    joblib.dump(payload, buffer, compress=3)
    return buffer.getvalue()


def _write(path: Path, data: bytes) -> None:
    """Write atomically: a crash leaves the old state or the whole file, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    with open(partial, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)


def save_version(
    actor: Actor, spec: TrainSpec, result: TrainResult, activate: bool | None = None
) -> ModelVersion:
    """Store a trained version: the artifact first, then its row in one transaction.

    ``activate``: True/False, or None to activate it when the model has no active version
    yet and it beats the baseline. If the transaction fails the file is removed again.
    """
    require(actor, "models:edit")
    check_question(spec)
    data = _serialise(result)
    digest = hashlib.sha256(data).hexdigest()
    model = db.session.scalar(sa.select(PropensityModel).where(PropensityModel.name == spec.name))
    latest = 0
    if model is not None:
        query = sa.select(sa.func.max(ModelVersion.version))
        latest = db.session.scalar(query.where(ModelVersion.model_id == model.id)) or 0
    number = latest + 1
    relative = Path("models") / spec.name / f"v{number}-{digest[:12]}.joblib"
    path = Path(current_app.instance_path) / relative
    _write(path, data)
    try:
        with transaction() as session:
            if model is None:
                model = PropensityModel(
                    name=spec.name, created_by_id=actor.user_id, **_question(spec)
                )
                session.add(model)
                session.flush()
            version = ModelVersion(
                model_id=model.id,
                version=number,
                algorithm=spec.algorithm,
                params=result.params,
                features=result.features,
                metrics=result.metrics,
                beats_baseline=result.beats_baseline,
                health_data=result.health_data,
                cutoff=spec.cutoff,
                training_window=result.window,
                data_size=result.data_size,
                artifact_path=relative.as_posix(),
                artifact_sha256=digest,
                artifact_bytes=len(data),
                train_seconds=result.seconds,
                trained_by=describe_actor(actor),
                trained_by_id=actor.user_id,
            )
            session.add(version)
            session.flush()
            has_active = session.scalar(
                sa.select(ModelVersion.id).where(
                    ModelVersion.model_id == model.id, ModelVersion.active.is_(True)
                )
            )
            if activate or (activate is None and has_active is None and result.beats_baseline):
                _activate(model, version)
            model.updated_at = utcnow()
            audit.record(
                actor,
                "model.train",
                "model",
                spec.name,
                version=number,
                active=version.active,
                beats_baseline=result.beats_baseline,
                rows=result.data_size.get("train_rows"),
            )
    except IntegrityError:
        path.unlink(missing_ok=True)
        raise Conflict(
            f"model {spec.name!r} was saved by another training meanwhile", "name"
        ) from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return version


def _activate(model: PropensityModel, version: ModelVersion) -> None:
    # Deactivate first and flush: the partial unique index allows one active row at a time.
    db.session.execute(
        sa.update(ModelVersion)
        .where(ModelVersion.model_id == model.id, ModelVersion.id != version.id)
        .values(active=False)
    )
    db.session.flush()
    version.active, version.activated_at = True, utcnow()


def activate(actor: Actor, name: str, number: int) -> ModelVersion:
    """Make a version the one segments and scheduled scoring use."""
    require(actor, "models:edit")
    model = get_model(name)
    version = get_version(model, number)
    with transaction():
        _activate(model, version)
        audit.record(actor, "model.activate", "model", name, version=number)
    return version


def load_pipeline(version: ModelVersion):
    """The fitted pipeline of a version, after checking the file against its checksum.

    :raise ArtifactRefused: the file is missing or its SHA-256 differs.
    """
    path = Path(current_app.instance_path) / version.artifact_path
    try:
        data = path.read_bytes()
    except OSError:
        raise ArtifactRefused(f"model file {version.artifact_path} is missing", "version") from None
    if hashlib.sha256(data).hexdigest() != version.artifact_sha256:
        raise ArtifactRefused(
            f"model file {version.artifact_path} does not match its checksum: refusing to load "
            "it (restore the file or train again)",
            "version",
        )
    # Unpickle the bytes that were checked, not the file again (it could change in between).
    payload = joblib.load(io.BytesIO(data))
    return payload["pipeline"]


def version_payload(version: ModelVersion, full: bool = False) -> dict:
    metrics = version.metrics or {}
    payload = {
        "version": version.version,
        "active": version.active,
        "algorithm": version.algorithm,
        "created_at": version.created_at.isoformat(),
        "trained_by": version.trained_by,
        "cutoff": version.cutoff.isoformat(),
        "model": metrics.get("model"),
        "baseline": metrics.get("baseline"),
        "beats_baseline": version.beats_baseline,
        "health_data": version.health_data,
        "data_size": version.data_size,
        "scored_at": version.scored_at.isoformat() if version.scored_at else None,
        "scored_count": version.scored_count,
    }
    if full:
        payload.update(
            params=version.params,
            features=version.features,
            training_window=version.training_window,
            metrics=metrics,
            artifact={
                "path": version.artifact_path,
                "sha256": version.artifact_sha256,
                "bytes": version.artifact_bytes,
            },  # fmt: skip
            train_seconds=version.train_seconds,
        )
    return payload


def model_payload(model: PropensityModel) -> dict:
    return {
        "name": model.name,
        "target_event": model.target_event,
        "where": model.target_where,
        "horizon_days": model.horizon_days,
        "profile_kind": model.profile_kind,
        "rescore_hours": model.rescore_hours,
    }
