"""Training: two point-in-time snapshots, a scikit-learn pipeline, and its evaluation.

Out-of-time validation. With cutoff C and horizon H the model is fitted on the snapshot at
C − H (features from events before C − H, label: the target in (C − H, C]) and evaluated on
the snapshot at C (features before C, label in (C, C + H]): the later profiles and the later
period it will be used on. The stored pipeline is the one evaluated. Nothing is written
here; ``registry.save_version`` stores the result.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.inspection import permutation_importance
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler
from threadpoolctl import threadpool_limits

from cdp.exceptions import ValidationFailed
from cdp.models.profiles import PROFILE_KINDS
from segments.propensity import evaluation, labels
from segments.propensity.common import Progress
from segments.propensity.features import FeatureSet, compute_features
from segments.propensity.models import ALGORITHMS

MIN_CLASS = 3  # positives and negatives each snapshot needs for a meaningful fit and test
IMPORTANCE_SAMPLE = 3000
EARLY_STOPPING_ROWS = 10_000


@dataclass(frozen=True)
class TrainSpec:
    name: str
    target: labels.Target
    horizon_days: int
    cutoff: datetime
    profile_kind: str = "patient"
    algorithm: str = "hgb"
    seed: int = 0


@dataclass
class TrainResult:
    pipeline: Pipeline
    features: list[str]
    params: dict
    metrics: dict
    beats_baseline: bool
    health_data: bool
    window: dict
    data_size: dict
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def signed_log1p(x):
    """log(1 + |x|) with the sign kept: tames counts and spend for the linear model."""
    return np.sign(x) * np.log1p(np.abs(x))


def build_pipeline(algorithm: str, numeric: list[str], categorical: list[str], rows: int, seed=0):
    categories = OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float32)
    if algorithm == "hgb":
        prepare = ColumnTransformer(
            [("numeric", "passthrough", numeric), ("traits", categories, categorical)]
        )
        model = HistGradientBoostingClassifier(
            learning_rate=0.08,
            max_iter=300,
            max_leaf_nodes=31,
            min_samples_leaf=40,
            l2_regularization=1.0,
            early_stopping=rows > EARLY_STOPPING_ROWS,
            random_state=seed,
        )
    else:
        scaled = Pipeline(
            [
                ("impute", SimpleImputer(add_indicator=True, keep_empty_features=True)),
                ("log", FunctionTransformer(signed_log1p)),
                ("scale", StandardScaler()),
            ]
        )
        prepare = ColumnTransformer(
            [("numeric", scaled, numeric), ("traits", categories, categorical)]
        )
        model = LogisticRegression(C=1.0, max_iter=2000)
    return Pipeline([("prepare", prepare), ("model", model)])


def check_spec(spec: TrainSpec) -> dict:
    """The checks that need no features: raise a clear error before any work is done.

    Returns the label windows. :raise ValidationFailed: on bad input.
    """
    if spec.algorithm not in ALGORITHMS:
        raise ValidationFailed(f"algorithm must be one of {', '.join(ALGORITHMS)}", "algorithm")
    if spec.profile_kind not in PROFILE_KINDS:
        raise ValidationFailed(
            f"profile kind must be one of {', '.join(PROFILE_KINDS)}", "profile_kind"
        )
    if not labels.target_occurs(spec.target):
        raise ValidationFailed(
            f"target event {spec.target.event!r} never occurs in the event log", "target_event"
        )
    end = labels.data_end()
    label_end = spec.cutoff + timedelta(days=spec.horizon_days)
    if end is None or label_end > end:
        last = end.date().isoformat() if end else "none"
        raise ValidationFailed(
            f"horizon past the data end: the label window ends {label_end.date().isoformat()}, "
            f"after the last event ({last}); choose an earlier cutoff or a shorter horizon",
            "horizon",
        )
    train_cutoff = spec.cutoff - timedelta(days=spec.horizon_days)
    return {
        "train_features_before": train_cutoff.isoformat(),
        "train_labels": [train_cutoff.isoformat(), spec.cutoff.isoformat()],
        "validation_features_before": spec.cutoff.isoformat(),
        "validation_labels": [spec.cutoff.isoformat(), label_end.isoformat()],
        "data_end": end.isoformat(),
    }


def _snapshot(spec: TrainSpec, cutoff: datetime, progress, label: str):
    health = spec.target.health_data
    features = compute_features(cutoff, spec.profile_kind, spec.target, health, progress)
    if len(features) == 0:
        consent = " with a health-data consent (the target is health data)" if health else ""
        raise ValidationFailed(
            f"empty training window: no eligible {spec.profile_kind} profile{consent} was seen "
            f"before {cutoff.date().isoformat()} ({label}); choose a later cutoff",
            "cutoff",
        )
    end = cutoff + timedelta(days=spec.horizon_days)
    y = np.isin(features.ids, labels.labelled(spec.target, cutoff, end)).astype(np.int8)
    positives = int(y.sum())
    if positives < MIN_CLASS or len(y) - positives < MIN_CLASS:
        who = "no" if positives < MIN_CLASS else "every"
        raise ValidationFailed(
            f"single-class labels: {who} eligible profile (or fewer than {MIN_CLASS} either way) "
            f"did {spec.target.event!r} in ({cutoff.date().isoformat()}, "
            f"{end.date().isoformat()}] ({label}: {positives} of {len(y)})",
            "target_event",
        )
    return features, y


def train(spec: TrainSpec, progress: Progress | None = None) -> TrainResult:
    """Fit and evaluate; :raise ValidationFailed: for bad input (nothing is stored anyway)."""
    started = time.perf_counter()

    def step(done: int, message: str) -> None:
        if progress is not None:
            progress(done, 5, message)

    window = check_spec(spec)
    train_cutoff = spec.cutoff - timedelta(days=spec.horizon_days)
    step(0, "features of the training snapshot")
    fit_on, y_fit = _snapshot(spec, train_cutoff, None, "training snapshot")
    step(1, f"features of the validation snapshot ({len(fit_on):,} training rows)")
    test_on, y_test = _snapshot(spec, spec.cutoff, None, "validation snapshot")
    columns = fit_on.numeric + fit_on.categorical
    # A column with no value at all (no quiz taken, nobody consented to health data) has
    # nothing to learn from and breaks binning: the pipeline leaves it out.
    usable = [c for c in fit_on.numeric if fit_on.frame[c].notna().any()]
    pipeline = build_pipeline(spec.algorithm, usable, fit_on.categorical, len(fit_on), spec.seed)
    step(2, f"fitting {spec.algorithm} on {len(fit_on):,} profiles")
    # One thread: the boosting library's threads wait for each other at every tree node
    # level; on a shared, busy machine that costs more than the second core gives (a fit on
    # 300,000 rows: 9 s on one thread, 19 s on two, with other work on the cores).
    with warnings.catch_warnings(record=True) as caught, threadpool_limits(limits=1):
        warnings.simplefilter("always")
        pipeline.fit(fit_on.frame[columns], y_fit)
        step(3, f"evaluating on {len(test_on):,} profiles")
        metrics = _evaluate(pipeline, test_on, y_test, columns, spec.seed)
    notes = sorted({str(w.message)[:200] for w in caught})
    unused = [c for c in fit_on.numeric if c not in usable]
    if unused:
        notes.append(f"no values, not used: {', '.join(unused)}")
    result = TrainResult(
        pipeline=pipeline,
        features=columns,
        params=_params(spec, pipeline),
        metrics={**metrics, "warnings": notes},
        beats_baseline=evaluation.compare(metrics["model"], metrics["baseline"]),
        health_data=spec.target.health_data,
        window=window,
        data_size={
            "train_rows": len(fit_on),
            "train_positives": int(y_fit.sum()),
            "validation_rows": len(test_on),
            "validation_positives": int(y_test.sum()),
            "events_read": fit_on.events + test_on.events,
            "features": len(columns),
        },
        notes=notes,
    )
    result.seconds = round(time.perf_counter() - started, 2)
    step(4, f"trained in {result.seconds:.1f} s")
    return result


def _evaluate(pipeline: Pipeline, test_on: FeatureSet, y: np.ndarray, columns, seed) -> dict:
    X = test_on.frame[columns]
    probabilities = pipeline.predict_proba(X)[:, 1]
    baseline = evaluation.baseline_scores(test_on.frame)
    return {
        "model": evaluation.ranking_metrics(y, probabilities),
        "baseline": evaluation.ranking_metrics(y, baseline),
        "lift": evaluation.lift_table(y, probabilities),
        "baseline_lift": evaluation.lift_table(y, baseline),
        "calibration": evaluation.calibration(y, probabilities),
        "importances": _importances(pipeline, X, y, seed),
        "distribution": evaluation.distribution(probabilities),
    }


def _importances(pipeline: Pipeline, X, y: np.ndarray, seed: int, top: int = 20) -> list[dict]:
    """Permutation importance (drop in ROC AUC) per input feature, on a validation sample."""
    rng = np.random.default_rng(seed)
    rows = np.arange(len(y))
    if len(rows) > IMPORTANCE_SAMPLE:
        rows = np.sort(rng.choice(rows, IMPORTANCE_SAMPLE, replace=False))
    if len(np.unique(y[rows])) < 2:
        return []
    found = permutation_importance(
        pipeline, X.iloc[rows], y[rows], scoring="roc_auc", n_repeats=3, random_state=seed
    )
    ranked = sorted(
        zip(X.columns, found.importances_mean, found.importances_std, strict=True),
        key=lambda item: -item[1],
    )
    return [
        {"feature": name, "importance": round(float(mean), 5), "std": round(float(std), 5)}
        for name, mean, std in ranked[:top]
    ]


def _params(spec: TrainSpec, pipeline: Pipeline) -> dict:
    model = pipeline.named_steps["model"]
    keep = ("learning_rate", "max_iter", "max_leaf_nodes", "min_samples_leaf", "l2_regularization",
            "early_stopping", "C")  # fmt: skip
    hyper = {k: v for k, v in model.get_params().items() if k in keep}
    if hasattr(model, "n_iter_"):
        hyper["iterations"] = int(np.max(model.n_iter_))
    return {
        "target_event": spec.target.event,
        "where": spec.target.where,
        "horizon_days": spec.horizon_days,
        "cutoff": spec.cutoff.isoformat(),
        "profile_kind": spec.profile_kind,
        "algorithm": spec.algorithm,
        "seed": spec.seed,
        "hyperparameters": hyper,
    }
