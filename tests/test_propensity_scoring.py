"""Scoring (chunks, progress, ranks and deciles, CSV), the propensity segment condition (SQL
against the reference), segments of the top N %, and scheduled rescoring."""

from __future__ import annotations

import csv
from datetime import timedelta

import numpy as np
import pytest
import sqlalchemy as sa

from cdp.actors import SYSTEM
from cdp.consent import record_consent
from cdp.db import db, utcnow
from cdp.exceptions import Conflict, NotFound
from cdp.models import JobRun
from cdp.queue import PERIODIC_JOBS
from segments.compiler import compile_query
from segments.conditions import Context
from segments.membership import make_context
from segments.propensity import registry, scoring, service, tasks
from segments.propensity.models import PropensityScore
from segments.reference import load_facts, reference_members
from tests.test_propensity_features import TARGET, build_world

pytestmark = pytest.mark.filterwarnings("error")


@pytest.fixture
def trained(app_ctx):
    world = build_world()
    spec = service.make_spec("coupon", TARGET, "60d", world.day(100), algorithm="logistic")
    service.train_model(SYSTEM, spec, activate=True)
    return world


def stored(name="coupon") -> dict[int, tuple[float, int, int]]:
    version = registry.get_version(registry.get_model(name))
    rows = db.session.execute(
        sa.select(PropensityScore.profile_id, PropensityScore.score, PropensityScore.rank,
                  PropensityScore.decile).where(PropensityScore.model_version_id == version.id)
    )  # fmt: skip
    return {pid: (score, rank, decile) for pid, score, rank, decile in rows}


def test_scoring_in_chunks_stores_score_rank_and_decile(trained, tmp_path):
    seen = []
    version = registry.get_version(registry.get_model("coupon"))
    scored = scoring.score(
        registry.get_model("coupon"), version, None, lambda *a: seen.append(a), chunk=100
    )
    n = len(scored.frame)
    eligible = len(trained.ids) - len(trained.refused)
    assert n == eligible and not set(scored.frame.index) & trained.refused
    assert sum("scored" in message for _d, _t, message in seen) == -(-n // 100)  # one per chunk
    assert scoring.store(version, scored) == n
    rows = stored()
    scores = np.array([rows[pid][0] for pid in sorted(rows)])
    ranks = np.array([rows[pid][1] for pid in sorted(rows)])
    assert sorted(ranks.tolist()) == list(range(1, n + 1))
    assert (np.diff(scores[np.argsort(ranks)]) <= 0).all()  # rank 1 is the highest score
    deciles = [rows[pid][2] for pid in rows]
    assert sorted(set(deciles)) == list(range(1, 11))
    assert all(abs(deciles.count(d) - n / 10) <= 1 for d in range(1, 11))
    db.session.refresh(version)
    assert version.scored_count == n and version.scored_at is not None
    # Rescoring replaces the set (same profiles, nothing left over).
    again = scoring.score(registry.get_model("coupon"), version)
    scoring.store(version, again)
    assert len(stored()) == n


def test_rescoring_stores_exactly_the_new_scores(trained):
    model = registry.get_model("coupon")
    version = registry.get_version(model)
    scoring.store(version, scoring.score(model, version))
    first, second, third, *_ = sorted(stored())
    # One profile refuses (its score must go), one stored row is stale, one is missing.
    record_consent(SYSTEM, first, "automated_marketing", "*", "withdrawn")
    scores = PropensityScore.__table__
    db.session.execute(
        sa.update(scores).where(scores.c.profile_id == second).values(score=0.5, rank=0, decile=0)
    )
    db.session.execute(sa.delete(scores).where(scores.c.profile_id == third))
    db.session.commit()
    again = scoring.score(model, version)
    scoring.store(version, again)
    expected = {
        pid: (score, rank, decile)
        for pid, score, rank, decile in again.frame[["score", "rank", "decile"]].itertuples()
    }
    assert first not in expected and {second, third} <= set(expected)
    assert stored() == expected


def test_the_score_command_path_writes_the_csv_best_first(trained, tmp_path):
    out = tmp_path / "scores.csv"
    job = service.jobs.create_job(SYSTEM, service.SCORE_JOB, {"name": "coupon"}, 100)
    scored = service.score_model(SYSTEM, "coupon", out=out, job_id=job.id)
    with out.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["profile_id", "user_id", "score", "decile"]
    assert len(rows) == len(scored.frame)
    assert rows[0]["user_id"] == f"u{rows[0]['profile_id']}"
    assert float(rows[0]["score"]) >= float(rows[-1]["score"])
    assert rows[0]["decile"] == "1" and rows[-1]["decile"] == "10"
    db.session.expire_all()
    job = db.session.get(JobRun, job.id)
    assert (job.status, job.progress, job.total) == ("succeeded", 100, 100)


def test_a_backtest_is_not_stored_and_reports_how_the_scores_did(trained, tmp_path):
    out = tmp_path / "backtest.csv"
    scored = service.score_model(SYSTEM, "coupon", as_of=trained.day(100), out=out)
    assert stored() == {} and out.exists()
    assert scored.backtest["roc_auc"] > 0.7 and scored.backtest["positives"] > 0


def test_refusals_and_health_consent_after_scoring(trained):
    service.score_model(SYSTEM, "coupon")
    ctx = make_context()
    members = set(
        db.session.scalars(
            compile_query(
                {"rule": {"type": "propensity", "model": "coupon", "top_percent": 100}}, ctx
            )
        )
    )
    assert members == set(stored())
    pid = sorted(members)[0]
    record_consent(SYSTEM, pid, "automated_marketing", "*", "withdrawn")
    db.session.commit()
    members = set(
        db.session.scalars(
            compile_query(
                {"rule": {"type": "propensity", "model": "coupon", "top_percent": 100}}, ctx
            )
        )
    )
    assert pid not in members


RULES = [
    {"type": "propensity", "model": "coupon", "top_percent": 10},
    {"type": "propensity", "model": "coupon", "top_percent": 33.3},
    {"type": "propensity", "model": "coupon", "op": "gte", "value": 0.5},
    {"type": "propensity", "model": "coupon", "op": "lt", "value": 0.2},
    {"type": "propensity", "model": "coupon", "op": "between", "value": [0.1, 0.6]},
    {"not": {"type": "propensity", "model": "coupon", "top_percent": 50}},
    {"type": "propensity", "model": "unknown", "top_percent": 50},
]


def test_the_condition_sql_agrees_with_the_reference(trained):
    service.score_model(SYSTEM, "coupon")
    scores = stored()
    pids = sorted(scores)
    record_consent(SYSTEM, pids[3], "automated_marketing", "*", "withdrawn")
    # A health-data version: its scores count only with a health-data consent.
    version = registry.get_version(registry.get_model("coupon"))
    db.session.commit()
    for health in (False, True):
        version.health_data = health
        db.session.commit()
        ctx = make_context()
        facts = load_facts()
        for rule in RULES:
            definition = {"rule": rule}
            sql = set(db.session.scalars(compile_query(definition, ctx)))
            assert sql == reference_members(definition, ctx, facts), (rule, health)
            scope = pids[::7]
            scoped = Context(now=ctx.now, dialect=ctx.dialect, scope=scope)
            assert set(db.session.scalars(compile_query(definition, scoped))) == sql & set(scope)
        top = set(db.session.scalars(compile_query({"rule": RULES[0]}, ctx)))
        assert pids[3] not in top and 0 < len(top) <= len(scores) // 10
        if health:
            assert top <= trained.consented


def test_a_segment_of_the_top_n_percent(trained):
    with pytest.raises(Conflict, match="score it first"):
        service.create_top_segment(SYSTEM, "coupon", 10)
    service.score_model(SYSTEM, "coupon")
    segment = service.create_top_segment(SYSTEM, "coupon", 10)
    assert segment.definition == {
        "rule": {"type": "propensity", "model": "coupon", "top_percent": 10}
    }
    assert "model:coupon" in segment.depends_on and not segment.realtime
    from segments import tasks as segment_tasks

    job = segment_tasks.create_refresh_job(SYSTEM, [segment.id])
    segment_tasks.run_refresh(job.id, [segment.id])
    db.session.refresh(segment)
    ranks = sorted(stored().values(), key=lambda row: row[1])
    assert segment.size == sum(1 for _s, rank, _d in ranks if rank * 100 <= 10 * len(ranks))
    # Scoring again queues a refresh of the segments that use the model.
    service.score_model(SYSTEM, "coupon")
    queued = db.session.scalars(sa.select(JobRun).where(JobRun.kind == "segments-refresh")).all()
    assert any(
        job.params["segment_ids"] == [segment.id] and job.status == "queued" for job in queued
    )
    with pytest.raises(NotFound):
        service.create_top_segment(SYSTEM, "nope", 10)


def test_scheduled_rescoring_scores_what_is_due(trained):
    assert PERIODIC_JOBS["models-rescore"].queue == "models"
    assert tasks.due() == ["coupon"]
    assert tasks.rescore_due() == 1
    assert tasks.due() == [] and stored()
    version = registry.get_version(registry.get_model("coupon"))
    version.scored_at = utcnow() - timedelta(hours=25)
    db.session.commit()
    assert tasks.due() == ["coupon"]
    registry.get_model("coupon").rescore_hours = None
    db.session.commit()
    assert tasks.due() == []
