"""Queue wiring in embedded mode: jobs run in-process, JSON-serialised, periodic jobs claimed once."""

import json
import time
import zlib

import pytest
import sqlalchemy as sa

from cdp.db import db
from cdp.models import JobRun
from cdp.queue import PERIODIC_JOBS, BackgroundLoop, PeriodicJob, register_periodic, tasks
from cdp.sweeper import SWEEPER, register_sweep_hook, sweep
from tests import sample_tasks


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def recorded(app, kind: str) -> bool:
    with app.app_context():
        found = db.session.scalar(sa.select(JobRun.id).where(JobRun.kind == kind))
        db.session.remove()
        return found is not None


def test_embedded_worker_runs_enqueued_jobs_without_redis(app):
    loop = BackgroundLoop(app, app.extensions["cdp.queue"], poll=0.05)
    loop.start()
    try:
        with app.app_context():
            assert tasks().embedded
            tasks().enqueue(sample_tasks.record, "embedded-1", {"n": 1}, queue="segments")
        assert wait_for(lambda: recorded(app, "embedded-1"))
    finally:
        loop.stop()


def test_jobs_are_serialised_as_json_not_pickle(app):
    with app.app_context():
        job = tasks().enqueue(sample_tasks.record, "json-check", {"n": 2})
        raw = zlib.decompress(tasks().connection.hget(f"rq:job:{job.id}", "data"))
    assert json.loads(raw)[2:] == [["json-check", {"n": 2}], {}]  # [func, instance, args, kwargs]


def test_arguments_that_are_not_json_are_refused_at_enqueue(app):
    with app.app_context(), pytest.raises(TypeError):
        tasks().enqueue(sample_tasks.record, "bad", object())


def test_unknown_queue_name_is_an_error(app):
    with app.app_context(), pytest.raises(ValueError, match="unknown queue"):
        tasks().enqueue(sample_tasks.record, "x", {}, queue="nope")


def test_periodic_job_is_claimed_once_per_interval(app):
    with app.app_context():
        register_periodic(PeriodicJob("test-tick", "tests.sample_tasks.fail_always", 3600))
        try:
            first = [job.name for job in tasks().claim_periodic()]
            second = [job.name for job in tasks().claim_periodic()]
        finally:
            PERIODIC_JOBS.pop("test-tick")
    assert "test-tick" in first
    assert "test-tick" not in second


def test_sweeper_is_declared_as_periodic_and_runs_its_hooks(app):
    assert PERIODIC_JOBS["sweeper"] == SWEEPER
    calls = []
    register_sweep_hook("test-hook", lambda: calls.append(1) or "did 1")
    try:
        with app.app_context():
            report = sweep()
    finally:
        from cdp.sweeper import SWEEP_HOOKS

        SWEEP_HOOKS.pop("test-hook")
    assert calls == [1]
    assert report["test-hook"] == "did 1"


def test_failing_job_lands_in_failed_registry_and_loop_survives(app):
    loop = BackgroundLoop(app, app.extensions["cdp.queue"], poll=0.05)
    loop.start()
    try:
        with app.app_context():
            failing = tasks().enqueue(sample_tasks.fail_always)
            tasks().enqueue(sample_tasks.record, "after-failure", {})
            queue = tasks().queue("default")
        assert wait_for(lambda: recorded(app, "after-failure"))
        assert failing.id in queue.failed_job_registry.get_job_ids()
    finally:
        loop.stop()
