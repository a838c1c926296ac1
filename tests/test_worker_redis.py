"""`cdp worker` on a real Redis: runs jobs, and a worker killed mid-job loses nothing."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from cdp.db import db
from cdp.models import JobRun
from cdp.queue import tasks
from tests import sample_tasks
from tests.conftest import make_app

pytestmark = pytest.mark.services

CDP = str(Path(sys.executable).parent / "cdp")


def worker_env(database_path, redis_url, tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDP_")}
    env.update(
        CDP_DATABASE_URL=f"sqlite:///{database_path}",
        CDP_REDIS_URL=redis_url,
        CDP_INSTANCE_PATH=str(tmp_path / "instance"),
        CDP_PII_KEY="test-pii-key",
        CDP_SECRET_KEY="test-secret",
        PYTHONPATH=str(Path(__file__).resolve().parent.parent),
    )
    return env


@pytest.fixture
def redis_app(migrated_sqlite, redis_url, tmp_path):
    path = tmp_path / "cdp.db"
    shutil.copy(migrated_sqlite, path)
    app = make_app(f"sqlite:///{path}", REDIS_URL=redis_url, JOB_RETRIES=3)
    return app, path


def runs_of(app, kind: str) -> int:
    with app.app_context():
        n = db.session.scalar(
            sa.select(sa.func.count()).select_from(JobRun).where(JobRun.kind == kind)
        )
        db.session.remove()
        return n


def test_worker_burst_runs_jobs_from_redis(redis_app, redis_url, tmp_path):
    app, path = redis_app
    with app.app_context():
        assert not tasks().embedded
        for i in range(3):
            tasks().enqueue(sample_tasks.record, f"redis-{i}", {"i": i}, queue="journeys")
    result = subprocess.run(
        [CDP, "worker", "--burst", "--queues", "journeys"],
        env=worker_env(path, redis_url, tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert [runs_of(app, f"redis-{i}") for i in range(3)] == [1, 1, 1]


@pytest.mark.slow
def test_job_of_a_killed_worker_is_retried_and_done_once(redis_app, redis_url, tmp_path):
    app, path = redis_app
    marker = tmp_path / "starts.txt"
    with app.app_context():
        tasks().enqueue(sample_tasks.slow_record, "survivor", str(marker), 5.0)
    env = worker_env(path, redis_url, tmp_path)
    first = subprocess.Popen(
        [CDP, "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marker.exists(), "the job never started"
    horse_pid = int(marker.read_text().split()[0])
    # kill -9 both the worker and its work horse (RQ puts the horse in its own process group).
    os.kill(horse_pid, signal.SIGKILL)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert runs_of(app, "survivor") == 0

    second = subprocess.Popen(
        [CDP, "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 300
        while runs_of(app, "survivor") == 0 and time.monotonic() < deadline:
            time.sleep(1)
        assert runs_of(app, "survivor") == 1, "the abandoned job was not retried within 5 minutes"
        assert len(marker.read_text().split()) == 2  # ran twice, recorded once (idempotent task)
    finally:
        second.send_signal(signal.SIGTERM)
        try:
            second.wait(timeout=30)
        except subprocess.TimeoutExpired:
            second.kill()
