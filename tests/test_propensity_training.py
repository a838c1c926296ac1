"""Training and the registry: beats the baseline where there is signal, flags it where there
is none, refuses bad input without saving anything, verifies artifacts, one active version."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import current_app
from sqlalchemy.exc import IntegrityError

from cdp import audit
from cdp.actors import SYSTEM
from cdp.db import db
from cdp.exceptions import Conflict, ValidationFailed
from cdp.models import AuditEntry, JobRun
from segments.propensity import registry, service
from segments.propensity.models import ModelVersion, PropensityModel
from tests.test_propensity_features import TARGET, build_world

pytestmark = pytest.mark.filterwarnings("error")


@pytest.fixture
def world(app_ctx):
    return build_world()


def train(world, name="coupon", algorithm="hgb", **kw):
    spec = service.make_spec(
        name, kw.pop("target", TARGET), kw.pop("horizon", "60d"), world.day(kw.pop("before", 100)),
        kw.pop("where", None), algorithm=algorithm,
    )  # fmt: skip
    return service.train_model(SYSTEM, spec, **kw)


def saved_nothing() -> bool:
    files = list((Path(current_app.instance_path) / "models").rglob("*"))
    rows = db.session.scalar(sa.select(sa.func.count()).select_from(ModelVersion))
    models = db.session.scalar(sa.select(sa.func.count()).select_from(PropensityModel))
    return rows == 0 and models == 0 and not [f for f in files if f.is_file()]


def test_a_model_beats_the_baseline_where_the_signal_is_beyond_the_target_history(world):
    version = train(world)
    metrics = version.metrics
    model, baseline = metrics["model"], metrics["baseline"]
    assert model["roc_auc"] > 0.75
    assert model["roc_auc"] > baseline["roc_auc"] + 0.005 and version.beats_baseline
    assert model["lift_top_decile"] > 1.5 and 0 < model["capture_top_decile"] <= 1
    assert [row["decile"] for row in metrics["lift"]] == list(range(1, 11))
    assert metrics["lift"][-1]["capture"] == 1.0
    assert len(metrics["calibration"]["bins"]) >= 5 and metrics["calibration"]["brier"] < 0.25
    top = [row["feature"] for row in metrics["importances"][:6]]
    assert "city_tier" in top and any(name.startswith("reads_") for name in top)
    # Stored: parameters, features, window, data size, who; the first good version is active.
    assert version.active and version.version == 1 and version.trained_by == "system:cli"
    assert version.params["horizon_days"] == 60 and version.params["algorithm"] == "hgb"
    assert "target_days_since_last" in version.features and "city_tier" in version.features
    size = version.data_size
    assert size["train_rows"] > 400 and 0 < size["validation_positives"] < size["validation_rows"]
    window = version.training_window
    assert window["train_labels"][1] == window["validation_labels"][0] == version.cutoff.isoformat()
    path = Path(current_app.instance_path) / version.artifact_path
    assert path.is_file() and path.stat().st_size == version.artifact_bytes
    entry = db.session.scalar(sa.select(AuditEntry).where(AuditEntry.action == "model.train"))
    assert entry.object_id == "coupon"


def test_a_model_no_better_than_the_baseline_is_flagged_and_not_activated(app_ctx):
    world = build_world(signal=False)  # even ids claim every 10 days, odd ids never
    version = train(world, name="rhythm", algorithm="logistic")
    assert version.metrics["baseline"]["roc_auc"] == 1.0
    assert not version.beats_baseline and not version.active


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"target": "prescription_uploaded"}, "target_event", "never occurs"),
        ({"before": 500}, "cutoff", "empty training window"),
        ({"before": 10}, "horizon", "horizon past the data end"),
        (
            {"where": [{"property": "value_cny", "op": "gt", "value": 1000}]},
            "target_event",
            "single-class labels",
        ),
        ({"where": [{"property": "value_cny", "op": "bigger"}]}, "where/0/op", "where/0/op"),
        ({"horizon": "900d"}, "horizon", "between 1 and 730"),
    ],
)
def test_bad_input_is_a_clear_error_and_nothing_is_saved(world, change, field, message):
    with pytest.raises(ValidationFailed) as error:
        train(world, **change)
    assert error.value.field == field and message in error.value.message
    assert saved_nothing()


def test_a_failure_while_saving_removes_the_artifact(world, monkeypatch):
    def broken(*_args, **_kw):
        raise RuntimeError("audit log unavailable")

    monkeypatch.setattr(audit, "record", broken)
    job = service.jobs.create_job(SYSTEM, service.TRAIN_JOB, {}, 100)
    with pytest.raises(RuntimeError):
        spec = service.make_spec("coupon", TARGET, "60d", world.day(100))
        service.train_model(SYSTEM, spec, job_id=job.id)
    assert saved_nothing()
    db.session.expire_all()
    failed = db.session.get(JobRun, job.id)
    assert failed.status == "failed" and "audit log unavailable" in failed.message


def test_a_tampered_or_missing_artifact_is_refused(world):
    version = train(world, algorithm="logistic")
    assert registry.load_pipeline(version) is not None
    path = Path(current_app.instance_path) / version.artifact_path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(registry.ArtifactRefused, match="does not match its checksum"):
        registry.load_pipeline(version)
    with pytest.raises(registry.ArtifactRefused):
        service.score_model(SYSTEM, "coupon")
    path.unlink()
    with pytest.raises(registry.ArtifactRefused, match="missing"):
        registry.load_pipeline(version)


def test_versions_and_the_one_active_version(world):
    first = train(world, algorithm="logistic")
    second = train(world, algorithm="logistic", before=90)
    assert (first.version, second.version) == (1, 2)
    assert first.active and not second.active  # a new version is not activated by itself
    registry.activate(SYSTEM, "coupon", 2)
    db.session.expire_all()
    assert [v.version for v in registry.versions(registry.get_model("coupon")) if v.active] == [2]
    # The database itself allows one active version per model.
    with pytest.raises(IntegrityError):
        db.session.execute(sa.update(ModelVersion).values(active=True))
    db.session.rollback()
    third = train(world, algorithm="logistic", activate=True)
    assert third.active and registry.get_version(registry.get_model("coupon")).version == 3


def test_a_name_stands_for_one_question(world):
    train(world, algorithm="logistic")
    with pytest.raises(Conflict, match="train under a new name"):
        train(world, algorithm="logistic", horizon="30d")
