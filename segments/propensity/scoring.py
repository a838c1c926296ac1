"""Scoring: every eligible profile through a version's pipeline, in chunks, with rank and decile.

Stored scores (the active version, features as of now) are replaced in one transaction, so
segments never see half a run; a back-test (features as of a past date) is only returned,
never stored. Profiles that refused automated marketing are never scored; a health-data
model scores only profiles with a current health-data consent.
"""

from __future__ import annotations

import csv
import io
import itertools
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from cdp.db import db, lock_for_writing, transaction, utcnow
from cdp.models import Identity
from segments.propensity import evaluation, labels
from segments.propensity.common import Progress
from segments.propensity.features import compute_features
from segments.propensity.models import ModelVersion, PropensityModel, PropensityScore
from segments.propensity.registry import load_pipeline

CHUNK = 50_000  # profiles per chunk (bounded memory, progress between chunks)
# Rows per call of the fitted model: every tree walks the whole block, so a block that stays
# in the core's cache (2,000 rows x 84 columns x 8 bytes: 1.3 MB) is read from memory once,
# not once per tree (4.7 s instead of 11.7 s for 1,000,000 rows and 89 trees).
BLOCK = 2_000
WRITE_CHUNK = 50_000
WRITE_LOCK_WAIT_MS = 30_000
WRITE_CACHE_KIB = 256 * 1024  # SQLite page cache while scores are written (then restored)
SCORES = PropensityScore.__table__
CSV_COLUMNS = ("profile_id", "user_id", "score", "decile")
STORED = np.dtype(
    [("profile_id", "i8"), ("rowid", "i8"), ("score", "f8"), ("rank", "i8"), ("decile", "i8")]
)
DELETE_SCORE = "DELETE FROM propensity_scores WHERE model_version_id = ? AND profile_id = ?"
UPDATE_SCORE = "UPDATE propensity_scores SET score = ?, rank = ?, decile = ? WHERE rowid = ?"
UPDATE_RANK = "UPDATE propensity_scores SET rank = ?, decile = ? WHERE rowid = ?"
INSERT_SCORE = (
    "INSERT INTO propensity_scores (model_version_id, profile_id, score, rank, decile)"
    " VALUES (?, ?, ?, ?, ?)"
)


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
        scores[start:end] = predict(pipeline, X.iloc[start:end])
        say(10 + int(80 * end / n), f"scored {end:,} of {n:,} profiles")
    rank, decile = evaluation.deciles(scores, features.ids)
    frame = pd.DataFrame(
        {"score": scores, "rank": rank, "decile": decile},
        index=pd.Index(features.ids, name="profile_id"),
    )
    result = Scored(as_of, frame)
    result.backtest = _backtest(model, target, as_of, features.ids, scores)
    return result


def predict(pipeline, X: pd.DataFrame) -> np.ndarray:
    """Probability of the positive class, on one thread, the model in cache-sized blocks.

    One thread: the boosting library parallelises each tree over the rows, and its threads
    wait for each other at the end of every tree; on a busy machine a thread that lost its
    core holds up the others (2 threads: 40 s of CPU where 1 thread needs 5 s).
    """
    with threadpool_limits(limits=1):
        if not isinstance(pipeline, Pipeline) or len(pipeline) < 2:
            return pipeline.predict_proba(X)[:, 1]
        prepared, model = pipeline[:-1].transform(X), pipeline[-1]
        out = np.empty(len(prepared), np.float64)
        for start in range(0, len(prepared), BLOCK):
            out[start : start + BLOCK] = model.predict_proba(prepared[start : start + BLOCK])[:, 1]
        return out


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
            # The write lock before reading what is stored: the rowids read stay valid.
            lock_for_writing(session, WRITE_LOCK_WAIT_MS)
            _sqlite_replace(version.id, frame)
        version.scored_at, version.scored_as_of = utcnow(), scored.as_of
        version.scored_count = len(frame)
    return len(frame)


def _copy(version_id: int, frame: pd.DataFrame) -> None:
    """PostgreSQL: COPY in the session's transaction, several times faster than inserts."""
    driver = db.session.connection().connection.driver_connection
    table = frame.reset_index()[["profile_id", "score", "rank", "decile"]]
    table.insert(0, "model_version_id", version_id)
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
    """SQLite: write only what changed, by rowid, through the driver, in the session's
    transaction: new rows inserted, rows of profiles no longer scored deleted, and of the
    others only the changed columns updated.

    Every row sits in four B-trees (the table and three indexes), and each changed indexed
    value moves an index entry. From one day to the next about 10 % of the scores change
    (the model's output is a step function of the features) but nearly every rank does:
    updating rank and decile alone keeps the score index untouched for the other 90 %.
    A larger page cache for the duration keeps the trees in memory instead of spilling
    dirty pages half-way (the default is 2 MB).
    """
    driver = db.session.connection().connection.driver_connection
    cursor = driver.cursor()
    (cache,) = cursor.execute("PRAGMA cache_size").fetchone()
    cursor.execute(f"PRAGMA cache_size = {-WRITE_CACHE_KIB}")
    try:
        stored = _stored(cursor, version_id)
        ids = frame.index.to_numpy()
        score, rank = frame["score"].to_numpy(), frame["rank"].to_numpy()
        decile = frame["decile"].to_numpy()
        at = np.minimum(np.searchsorted(stored["profile_id"], ids), len(stored) - 1)
        old = stored[at] if len(stored) else np.zeros(len(ids), stored.dtype)
        known = old["profile_id"] == ids if len(stored) else np.zeros(len(ids), bool)
        moved = known & (old["score"] != score)
        ranked = known & ~moved & ((old["rank"] != rank) | (old["decile"] != decile))
        new = ~known
        gone = np.setdiff1d(stored["profile_id"], ids)
        _execute(cursor, DELETE_SCORE, np.full(len(gone), version_id), gone)
        _execute(cursor, UPDATE_SCORE, *(c[moved] for c in (score, rank, decile, old["rowid"])))
        _execute(cursor, UPDATE_RANK, *(c[ranked] for c in (rank, decile, old["rowid"])))
        _execute(cursor, INSERT_SCORE, np.full(int(new.sum()), version_id),
                 *(c[new] for c in (ids, score, rank, decile)))  # fmt: skip
    finally:
        cursor.execute(f"PRAGMA cache_size = {int(cache)}")
        cursor.close()


def _stored(cursor, version_id: int) -> np.ndarray:
    """A version's stored scores (profile_id, rowid, score, rank, decile), by profile_id."""
    cursor.execute(
        "SELECT profile_id, rowid, score, rank, decile FROM propensity_scores"
        " WHERE model_version_id = ? ORDER BY profile_id",
        (version_id,),
    )
    flat = np.fromiter(itertools.chain.from_iterable(cursor), np.float64).reshape(-1, 5)
    table = np.zeros(len(flat), STORED)
    for number, name in enumerate(STORED.names):
        table[name] = flat[:, number]
    return table


def _execute(cursor, statement: str, *columns: np.ndarray) -> None:
    """executemany over numpy columns, in blocks (Python values, bounded memory)."""
    for start in range(0, len(columns[0]), WRITE_CHUNK):
        block = [column[start : start + WRITE_CHUNK].tolist() for column in columns]
        cursor.executemany(statement, zip(*block, strict=True))


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
