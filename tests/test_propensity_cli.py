"""`cdp models` and `cdp features export`: what a data scientist types, and what comes back."""

from __future__ import annotations

import csv

import orjson
import pandas as pd
import pytest
import sqlalchemy as sa

from cdp.db import db
from cdp.models import JobRun
from segments.propensity.models import ModelVersion
from tests.test_propensity_features import TARGET, build_world

pytestmark = pytest.mark.filterwarnings("error")


@pytest.fixture
def world(app):
    with app.app_context():
        return build_world()


def train(runner, world, *extra):
    args = ["models", "train", "--name", "coupon", "--target-event", TARGET, "--horizon", "60d"]
    return runner.invoke(args=[*args, "--cutoff", world.day(100), *extra])


def test_train_list_show_score(app, runner, world, tmp_path):
    result = train(runner, world, "--algorithm", "logistic")
    assert result.exit_code == 0, result.output
    assert "Saved coupon version 1 (active)" in result.stdout
    assert "ROC AUC" in result.stdout and "baseline" in result.stdout
    assert "features of the validation snapshot" in result.stderr  # progress
    listed = runner.invoke(args=["models", "list", "--json"])
    payload = orjson.loads(listed.stdout)["models"]
    assert [(m["name"], m["versions"], m["active"]["version"]) for m in payload] == [
        ("coupon", 1, 1)
    ]
    assert "coupon" in runner.invoke(args=["models", "list"]).stdout
    shown = orjson.loads(runner.invoke(args=["models", "show", "coupon", "--json"]).stdout)
    version = shown["versions"][0]
    assert shown["target_event"] == TARGET and shown["horizon_days"] == 60
    assert {"params", "features", "metrics", "training_window", "data_size", "artifact"} <= set(
        version
    )
    assert len(version["artifact"]["sha256"]) == 64 and version["trained_by"] == "system:cli"
    assert "top features:" in runner.invoke(args=["models", "show", "coupon"]).stdout
    out = tmp_path / "scores.csv"
    scored = runner.invoke(args=["models", "score", "coupon", "--out", str(out)])
    assert scored.exit_code == 0, scored.output
    assert "(stored)" in scored.stdout and "scored" in scored.stderr
    with out.open(encoding="utf-8") as handle:
        header = next(csv.reader(handle))
    assert header == ["profile_id", "user_id", "score", "decile"]
    backtest = runner.invoke(
        args=["models", "score", "coupon", "--as-of", world.day(100), "--json"]
    )
    assert orjson.loads(backtest.stdout)["backtest"]["roc_auc"] > 0.5
    with app.app_context():
        kinds = db.session.scalars(sa.select(JobRun.kind).order_by(JobRun.id)).all()
        assert kinds.count("models-train") == 1 and kinds.count("models-score") == 2


def test_activate_a_version(app, runner, world):
    assert train(runner, world, "--algorithm", "logistic").exit_code == 0
    assert train(runner, world, "--algorithm", "logistic", "--no-activate").exit_code == 0
    result = runner.invoke(args=["models", "activate", "coupon", "2"])
    assert result.exit_code == 0 and "v2 is active" in result.stdout
    with app.app_context():
        active = db.session.scalars(
            sa.select(ModelVersion.version).where(ModelVersion.active)
        ).all()
        assert active == [2]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target-event", "never_happens"], "never occurs"),
        (["--where", "[{"], "--where is not JSON"),
        (["--horizon", "soon"], "horizon must look like 90d"),
        (["--cutoff", "2026-13-40"], "cutoff must be a date"),
    ],
)
def test_bad_input_exits_with_a_clear_message(app, runner, world, args, message):
    base = {
        "--name": "coupon",
        "--target-event": TARGET,
        "--horizon": "60d",
        "--cutoff": world.day(100),
    }
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    result = runner.invoke(args=["models", "train", *[x for pair in base.items() for x in pair]])
    assert result.exit_code == 2 and message in result.output
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(ModelVersion)) == 0


def test_unknown_model_and_no_active_version(runner, world):
    assert "no model called 'nope'" in runner.invoke(args=["models", "show", "nope"]).output
    assert runner.invoke(args=["models", "score", "nope"]).exit_code == 2


def test_features_export_csv_and_parquet(runner, world, tmp_path):
    out = tmp_path / "features.csv"
    result = runner.invoke(
        args=["features", "export", "--cutoff", world.day(100), "--out", str(out),
              "--target-event", TARGET, "--horizon", "60d"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out)
    assert {"profile_id", "reads_90", "target_365", "city_tier", "label"} <= set(frame.columns)
    assert len(frame) == len(world.ids) - len(world.refused)
    assert set(frame["label"]) == {0, 1}
    parquet = tmp_path / "features.parquet"
    assert (
        runner.invoke(
            args=["features", "export", "--cutoff", world.day(100), "--out", str(parquet)]
        ).exit_code
        == 0
    )
    table = pd.read_parquet(parquet)
    assert len(table) == len(frame) and "label" not in table.columns
    bad = runner.invoke(args=["features", "export", "--cutoff", world.day(100), "--out", "x.json"])
    assert bad.exit_code == 2 and ".csv or .parquet" in bad.output
