"""What a data scientist reads to judge a model: ranking metrics, lift, calibration, baseline.

All figures are computed on the validation snapshot (a later point in time than the one
the model was fitted on), so they estimate how the model does on tomorrow's profiles.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

# A model "beats" the baseline when its ROC AUC is at least this much higher and its PR AUC
# is not lower: smaller differences are within the noise of a validation set.
MARGIN = 0.005
DECILES = 10


def _round(value: float, digits: int = 4) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def deciles(
    scores: np.ndarray, tiebreak: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(rank, decile) per score: rank 1 is the highest (ties by ``tiebreak`` ascending),
    decile 1 the top 10 %."""
    n = len(scores)
    tiebreak = np.arange(n) if tiebreak is None else tiebreak
    order = np.lexsort((tiebreak, -scores))
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(1, n + 1)
    decile = np.ceil(rank * DECILES / max(n, 1)).astype(np.int64)
    return rank, np.clip(decile, 1, DECILES)


def lift_table(y: np.ndarray, scores: np.ndarray) -> list[dict]:
    """Per decile (1 = highest scores): size, positive rate, lift and cumulative capture."""
    _rank, decile = deciles(scores)
    base = y.mean() if len(y) else 0.0
    total = y.sum()
    table, captured = [], 0
    for d in range(1, DECILES + 1):
        members = decile == d
        size, hits = int(members.sum()), int(y[members].sum())
        captured += hits
        rate = hits / size if size else 0.0
        table.append(
            {
                "decile": d,
                "size": size,
                "positives": hits,
                "rate": _round(rate),
                "lift": _round(rate / base) if base else None,
                "capture": _round(captured / total) if total else None,
            }
        )
    return table


def ranking_metrics(y: np.ndarray, scores: np.ndarray) -> dict:
    """ROC AUC, PR AUC, and lift and capture of the top decile."""
    table = lift_table(y, scores)
    return {
        "roc_auc": _round(roc_auc_score(y, scores)),
        "pr_auc": _round(average_precision_score(y, scores)),
        "lift_top_decile": table[0]["lift"],
        "capture_top_decile": table[0]["capture"],
        "base_rate": _round(float(y.mean())),
    }


def calibration(y: np.ndarray, probabilities: np.ndarray, bins: int = 10) -> dict:
    """Mean predicted vs observed rate in quantile bins, and the Brier score."""
    observed, predicted = calibration_curve(y, probabilities, n_bins=bins, strategy="quantile")
    return {
        "brier": _round(brier_score_loss(y, probabilities)),
        "bins": [
            {"predicted": _round(p), "observed": _round(o)}
            for p, o in zip(predicted, observed, strict=True)
        ],
    }


def baseline_scores(frame: pd.DataFrame) -> np.ndarray:
    """The recency-frequency heuristic: how often the target event happened in the last year,
    ties broken by how recently (percentile ranks, equally weighted)."""
    frequency = frame["target_365"].rank(pct=True, method="average")
    recency = (-frame["target_days_since_last"]).rank(pct=True, method="average")
    return (0.5 * frequency + 0.5 * recency).to_numpy(dtype=np.float64)


def compare(model: dict, baseline: dict) -> bool:
    """Whether the model beats the baseline (see MARGIN)."""
    if model["roc_auc"] is None or baseline["roc_auc"] is None:
        return False
    return model["roc_auc"] >= baseline["roc_auc"] + MARGIN and (
        model["pr_auc"] >= (baseline["pr_auc"] or 0)
    )


def distribution(scores: np.ndarray, bins: int = 20) -> list[dict]:
    """Histogram of scores over [0, 1] in equal-width bins."""
    counts, edges = np.histogram(np.clip(scores, 0, 1), bins=bins, range=(0.0, 1.0))
    return [
        {"from": _round(edges[i], 3), "to": _round(edges[i + 1], 3), "count": int(counts[i])}
        for i in range(bins)
    ]
