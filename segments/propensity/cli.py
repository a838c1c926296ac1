"""``cdp models`` (train, list, show, score, activate) and ``cdp features export``."""

from __future__ import annotations

import time

import click
import orjson
from flask.cli import with_appcontext

from cdp import jobs
from cdp.actors import SYSTEM
from cdp.commands.output import domain_errors, emit
from segments.propensity import registry, service
from segments.propensity.models import ALGORITHMS, ModelVersion
from segments.propensity.registry import model_payload, version_payload


def _progress():
    started = time.monotonic()

    def report(done: int, total: int, message: str) -> None:
        share = f"{int(done * 100 / total):>3}%" if total else "    "
        click.echo(f"  [{share}] {message} ({time.monotonic() - started:.1f}s)", err=True)

    return report


def _where(text: str | None):
    if text is None:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise click.UsageError(f"--where is not JSON: {exc}") from exc


def _metric_lines(version: ModelVersion) -> list[str]:
    metrics = version.metrics or {}
    model, base = metrics.get("model") or {}, metrics.get("baseline") or {}
    lines = [f"  {'':<22}{'model':>10}{'baseline':>10}"]
    for key, label in (("roc_auc", "ROC AUC"), ("pr_auc", "PR AUC"),
                       ("lift_top_decile", "lift, top decile"),
                       ("capture_top_decile", "capture, top decile")):  # fmt: skip
        lines.append(f"  {label:<22}{_num(model.get(key)):>10}{_num(base.get(key)):>10}")
    if not version.beats_baseline:
        lines.append("  WARNING: the model does not beat the recency-frequency baseline")
    return lines


def _num(value) -> str:
    return "—" if value is None else f"{value:.3f}"


@click.group("models")
def models_group():
    """Propensity models: train, inspect, score, activate."""


@models_group.command("train")
@click.option("--name", required=True, help="Model name (letters, digits, _ - .).")
@click.option("--target-event", required=True, help="The event to predict.")
@click.option("--where", "where_json", help="Property filters of the target, as JSON list.")
@click.option("--horizon", required=True, help="Prediction window, e.g. 90d.")
@click.option("--cutoff", required=True, help="YYYY-MM-DD: features before it, labels after.")
@click.option("--profile-kind", default="patient", type=click.Choice(["patient", "hcp"]))
@click.option("--algorithm", default="hgb", type=click.Choice(ALGORITHMS))
@click.option("--activate/--no-activate", default=None, help="Default: if first and good.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_appcontext
@domain_errors
def train_command(name, target_event, where_json, horizon, cutoff, profile_kind, algorithm,
                  activate, as_json):  # fmt: skip
    """Train a new version; prints progress, metrics beside the baseline, and where it went."""
    spec = service.make_spec(
        name, target_event, horizon, cutoff, _where(where_json), profile_kind, algorithm
    )
    job = jobs.create_job(SYSTEM, service.TRAIN_JOB, {"name": spec.name, "cli": True}, 100)
    click.echo(f"Training {spec.name} ({algorithm}), job #{job.id}...", err=True)
    version = service.train_model(SYSTEM, spec, activate, _progress(), job_id=job.id)
    lines = [
        f"Saved {spec.name} version {version.version}" + (" (active)" if version.active else "")
    ]
    lines += _metric_lines(version)
    size = version.data_size
    lines.append(
        f"  trained on {size['train_rows']:,} profiles ({size['train_positives']:,} positive), "
        f"validated on {size['validation_rows']:,} ({size['validation_positives']:,} positive) "
        f"in {version.train_seconds:.1f}s"
    )
    emit(as_json, {"job_id": job.id, **version_payload(version)}, lines)


@models_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_appcontext
def list_command(as_json):
    """Models with their active version and its ROC AUC."""
    rows = []
    for model in registry.list_models():
        found = registry.versions(model)
        active = next((v for v in found if v.active), None)
        rows.append((model, len(found), active))
    payload = {
        "models": [
            {**model_payload(m), "versions": n, "active": version_payload(a) if a else None}
            for m, n, a in rows
        ]
    }
    lines = [f"{'name':<24}{'target':<22}{'versions':>9}{'active':>8}{'ROC AUC':>9}"]
    for model, count, active in rows:
        auc = _num(((active.metrics or {}).get("model") or {}).get("roc_auc")) if active else "—"
        number = f"v{active.version}" if active else "—"
        lines.append(f"{model.name:<24}{model.target_event:<22}{count:>9}{number:>8}{auc:>9}")
    emit(as_json, payload, lines)


@models_group.command("show")
@click.argument("name")
@click.option("--version", "number", type=int, help="A version (default: all, newest first).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_appcontext
@domain_errors
def show_command(name, number, as_json):
    """A model's versions: parameters, metrics, baseline, training window, data size."""
    model = registry.get_model(name)
    found = [registry.get_version(model, number)] if number else registry.versions(model)
    payload = {**model_payload(model), "versions": [version_payload(v, True) for v in found]}
    lines = [f"{model.name}: {model.target_event} within {model.horizon_days} days "
             f"({model.profile_kind})"]  # fmt: skip
    for v in found:
        window = v.training_window or {}
        lines.append(
            f"v{v.version}{' [active]' if v.active else ''} {v.algorithm}, trained "
            f"{v.created_at:%Y-%m-%d %H:%M} by {v.trained_by}, cutoff {v.cutoff:%Y-%m-%d}"
        )
        lines += _metric_lines(v)
        lines.append(f"  window: {window.get('train_labels')} → {window.get('validation_labels')}")
        lines.append(f"  data: {v.data_size}")
        top = ", ".join(i["feature"] for i in (v.metrics or {}).get("importances", [])[:5])
        lines.append(f"  top features: {top or '—'}")
    emit(as_json, payload, lines)


@models_group.command("score")
@click.argument("name")
@click.option("--as-of", help="YYYY-MM-DD: features as of that day (a back-test, not stored).")
@click.option("--out", type=click.Path(dir_okay=False), help="Write the scores as CSV.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_appcontext
@domain_errors
def score_command(name, as_of, out, as_json):
    """Score every eligible profile with the active version (stored unless --as-of)."""
    model = registry.get_model(name)
    version = registry.get_version(model)
    job = jobs.create_job(SYSTEM, service.SCORE_JOB, {"name": name, "cli": True}, 100)
    click.echo(f"Scoring with {name} v{version.version}, job #{job.id}...", err=True)
    scored = service.score_model(SYSTEM, name, as_of, out, _progress(), job_id=job.id)
    summary = scored.summary()
    lines = [f"Scored {summary['profiles']:,} profiles" + ("" if as_of else " (stored)")]
    if out:
        lines.append(f"  wrote {out}")
    if summary["backtest"].get("roc_auc") is not None:
        bt = summary["backtest"]
        lines.append(
            f"  back-test: ROC AUC {bt['roc_auc']:.3f}, lift top decile {bt['lift_top_decile']}"
        )
    emit(as_json, {"job_id": job.id, "version": version.version, **summary}, lines)


@models_group.command("activate")
@click.argument("name")
@click.argument("number", type=int)
@with_appcontext
@domain_errors
def activate_command(name, number):
    """Make version NUMBER the one segments and scheduled scoring use."""
    registry.activate(SYSTEM, name, number)
    click.echo(f"{name} v{number} is active; run `cdp models score {name}` to score with it.")


@click.group("features")
def features_group():
    """Point-in-time feature tables for notebooks."""


@features_group.command("export")
@click.option("--cutoff", required=True, help="YYYY-MM-DD: only events before it count.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="file.csv or .parquet")
@click.option("--profile-kind", default="patient", type=click.Choice(["patient", "hcp"]))
@click.option("--target-event", help="Add the target's history (and a label with --horizon).")
@click.option("--where", "where_json", help="Property filters of the target, as JSON list.")
@click.option("--horizon", help="With --target-event: label = target in (cutoff, +horizon].")
@with_appcontext
@domain_errors
def export_command(cutoff, out, profile_kind, target_event, where_json, horizon):
    """Write one row per eligible profile: point-in-time features as of the cutoff."""
    rows = service.export_features(
        SYSTEM, cutoff, out, profile_kind, target_event, horizon, _where(where_json), _progress()
    )
    click.echo(f"Wrote {rows:,} rows to {out}")
