"""Scoring: every eligible profile through a version's pipeline, in chunks, with rank and decile.

Stored scores (the active version, features as of now) are replaced in one transaction, so
segments never see half a run; a back-test (features as of a past date) is only returned,
never stored. Profiles that refused automated marketing are never scored; a health-data
model scores only profiles with a current health-data consent.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from cdp.db import db, transaction, utcnow
from cdp.models import Identity
from segments.propensity import evaluation, labels
from segments.propensity.common import Progress
from segments.propensity.features import compute_features
from segments.propensity.models import ModelVersion, PropensityModel, PropensityScore
from segments.propensity.registry import load_pipeline

CHUNK = 50_000  # profiles per predict call (bounded memory, progress between chunks)
WRITE_CHUNK = 50_000
WRITE_CACHE_KIB = 256 * 1024  # SQLite page cache while scores are written (then restored)
SCORES = PropensityScore.__table__
CSV_COLUMNS = ("profile_id", "user_id", "score", "decile")


@dataclass
class Scored:
    as_of: datetime
    frame: pd.DataFrame  # profile_id (index), score, rank, decile
    backtest: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)

    def summary(self) -> dict:
        scores = self.frame["score"].to_numpy()
        return {
            "profiles": len(scores),
            "mean": round(float(scores.mean()), 4) if len(scores) else None,
            "distribution": evaluation.distribution(scores),
            "backtest": self.backtest,
        }


def score(
    model: PropensityModel,
    version: ModelVersion,
    as_of: datetime | None = None,
    progress: Progress | None = None,
    chunk: int = CHUNK,
) -> Scored:
    """Scores of every eligible profile as of ``as_of`` (default now); nothing is written."""
    as_of = as_of or utcnow()
    pipeline = load_pipeline(version)
    target = labels.Target(model.target_event, list(model.target_where or []))

    def say(done: int, message: str) -> None:
        if progress is not None:
            progress(done, 100, message)

    say(0, "computing features")
    features = compute_features(
        as_of, model.profile_kind, target, version.health_data, lambda _d, _t, m: say(5, m)
    )
    X = features.frame[version.features]
    n = len(features)
    scores = np.empty(n, np.float64)
    for start in range(0, n, chunk):
        end = min(start + chunk, n)
        scores[start:end] = pipeline.predict_proba(X.iloc[start:end])[:, 1]
        say(10 + int(80 * end / n), f"scored {end:,} of {n:,} profiles")
    rank, decile = evaluation.deciles(scores, features.ids)
    frame = pd.DataFrame(
        {"score": scores, "rank": rank, "decile": decile},
        index=pd.Index(features.ids, name="profile_id"),
    )
    result = Scored(as_of, frame)
    result.backtest = _backtest(model, target, as_of, features.ids, scores)
    return result


def _backtest(model, target, as_of: datetime, ids: np.ndarray, scores: np.ndarray) -> dict:
    """How the scores did, when the horizon after ``as_of`` is already in the data."""
    end = as_of + timedelta(days=model.horizon_days)
    last = labels.data_end()
    if last is None or end > last or len(ids) == 0:
        return {}
    y = np.isin(ids, labels.labelled(target, as_of, end)).astype(np.int8)
    if y.min() == y.max():
        return {"positives": int(y.sum()), "note": "single class: no ranking metrics"}
    return {"positives": int(y.sum()), **evaluation.ranking_metrics(y, scores)}


def store(version: ModelVersion, scored: Scored) -> int:
    """Replace the version's stored scores with these, in one transaction."""
    frame = scored.frame
    with transaction() as session:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(sa.delete(SCORES).where(SCORES.c.model_version_id == version.id))
            _copy(version.id, frame)
        else:
            _sqlite_replace(version.id, frame)
        version.scored_at, version.scored_as_of = utcnow(), scored.as_of
        version.scored_count = len(frame)
    return len(frame)


def _table(version_id: int, frame: pd.DataFrame) -> pd.DataFrame:
    table = frame.reset_index()[["profile_id", "score", "rank", "decile"]]
    table.insert(0, "model_version_id", version_id)
    return table


def _copy(version_id: int, frame: pd.DataFrame) -> None:
    """PostgreSQL: COPY in the session's transaction, several times faster than inserts."""
    driver = db.session.connection().connection.driver_connection
    table = _table(version_id, frame)
    columns = ", ".join(table.columns)
    with (
        driver.cursor() as cursor,
        cursor.copy(f"COPY propensity_scores ({columns}) FROM STDIN") as copy,
    ):
        for start in range(0, len(table), WRITE_CHUNK):
            buffer = io.StringIO()
            table.iloc[start : start + WRITE_CHUNK].to_csv(
                buffer, sep="\t", header=False, index=False
            )
            copy.write(buffer.getvalue())


def _sqlite_replace(version_id: int, frame: pd.DataFrame) -> None:
    """SQLite: update the rows in place (UPSERT) and delete those of profiles no longer
    scored, through the driver, in the session's transaction.

    Every row sits in four B-trees (the table's key and three indexes); deleting all rows and
    inserting them again touches each twice, an update in place only the score and rank
    indexes. A larger page cache for the duration keeps those trees in memory instead of
    spilling dirty pages half-way (the default is 2 MB).
    """
    driver = db.session.connection().connection.driver_connection
    cursor = driver.cursor()
    (cache,) = cursor.execute("PRAGMA cache_size").fetchone()
    cursor.execute(f"PRAGMA cache_size = {-WRITE_CACHE_KIB}")
    try:
        ids = frame.index.to_numpy()
        cursor.execute(
            "SELECT profile_id FROM propensity_scores WHERE model_version_id = ?", (version_id,)
        )
        before = np.fromiter((row[0] for row in cursor), np.int64)
        gone = np.setdiff1d(before, ids)
        cursor.executemany(
            "DELETE FROM propensity_scores WHERE model_version_id = ? AND profile_id = ?",
            ((version_id, pid) for pid in gone.tolist()),
        )
        table = _table(version_id, frame)
        statement = (
            "INSERT INTO propensity_scores (model_version_id, profile_id, score, rank, decile)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (model_version_id, profile_id) DO UPDATE"
            " SET score = excluded.score, rank = excluded.rank, decile = excluded.decile"
        )
        for start in range(0, len(table), WRITE_CHUNK):
            block = table.iloc[start : start + WRITE_CHUNK]
            rows = zip(*(block[c].tolist() for c in table.columns), strict=True)
            cursor.executemany(statement, rows)
    finally:
        cursor.execute(f"PRAGMA cache_size = {int(cache)}")
        cursor.close()


def user_ids(profile_ids: np.ndarray) -> pd.Series:
    """The ``user_id`` identifier of each profile that has one (the smallest, if several)."""
    query = (
        sa.select(Identity.profile_id, sa.func.min(Identity.value_index))
        .where(Identity.type == "user_id")
        .group_by(Identity.profile_id)
    )
    found = pd.DataFrame(db.session.execute(query).all(), columns=["profile_id", "user_id"])
    found = found.set_index("profile_id")["user_id"]
    return found.reindex(profile_ids)


def write_csv(scored: Scored, path: Path | str) -> int:
    """profile_id, user_id (empty when none), score, decile; best scores first."""
    frame = scored.frame.sort_values("rank")
    table = pd.DataFrame(
        {
            "profile_id": frame.index.to_numpy(),
            "user_id": user_ids(frame.index.to_numpy()).to_numpy(),
            "score": frame["score"].round(6).to_numpy(),
            "decile": frame["decile"].to_numpy(),
        }
    )
    table.to_csv(path, index=False, columns=list(CSV_COLUMNS), quoting=csv.QUOTE_MINIMAL)
    return len(table)


def stored_distribution(version: ModelVersion, bins: int = 20) -> list[dict]:
    """Histogram of a version's stored scores (counted by the database)."""
    bucket = sa.func.min(sa.cast(SCORES.c.score * bins, sa.Integer), bins - 1).label("bucket")
    if db.session.get_bind().dialect.name == "postgresql":
        bucket = sa.func.least(sa.cast(sa.func.floor(SCORES.c.score * bins), sa.Integer), bins - 1)
    query = (
        sa.select(bucket, sa.func.count())
        .where(SCORES.c.model_version_id == version.id)
        .group_by(bucket)
    )
    counts = dict(db.session.execute(query).all())
    return [
        {"from": round(i / bins, 3), "to": round((i + 1) / bins, 3), "count": counts.get(i, 0)}
        for i in range(bins)
    ]
