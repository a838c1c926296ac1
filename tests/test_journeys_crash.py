"""Exactly once against real failures: a worker killed -9 mid-send, a Redis that forgot its jobs.

A real `cdp worker` (RQ on a real redis-server) runs a journey whose step calls a webhook
receiver in this process. The receiver records every request and its Idempotency-Key, as a
provider that dedupes on it would.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import sqlalchemy as sa

from cdp.actors import SYSTEM
from cdp.db import db
from cdp.sources import create_source
from journeys.models import Delivery
from tests.conftest import make_app
from tests.journey_helpers import person, publish, track
from tests.test_content import Team, approved
from tests.test_worker_redis import CDP, worker_env

pytestmark = [pytest.mark.services, pytest.mark.slow]


class Receiver:
    """A webhook endpoint: the first call hangs until released (the worker dies meanwhile)."""

    def __init__(self, hang_first: bool):
        self.requests: list[str] = []
        self.first_arrived = threading.Event()
        self.release = threading.Event()
        self.hang_first = hang_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.requests.append(self.headers.get("Idempotency-Key"))
                if receiver.hang_first and len(receiver.requests) == 1:
                    receiver.first_arrived.set()
                    receiver.release.wait(60)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"ok": true}')

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.release.set()
        self.server.shutdown()


@pytest.fixture
def world(migrated_sqlite, redis_url, tmp_path):
    path = tmp_path / "cdp.db"
    shutil.copy(migrated_sqlite, path)
    app = make_app(f"sqlite:///{path}", REDIS_URL=redis_url)
    env = worker_env(path, redis_url, tmp_path)
    env.update(
        CDP_JOURNEY_LEASE_SECONDS="3",
        CDP_JOURNEY_SWEEP_SECONDS="1",
        CDP_JOURNEY_WEBHOOK_SECRET="hook-secret",
        CDP_JOURNEY_WEBHOOK_ALLOWED_HOSTS="127.0.0.1",
    )
    return app, env


def start_journey(app, url: str) -> None:
    """A published journey whose single step calls the webhook, and one person who enters it."""
    with app.app_context():
        team = Team(app)
        version = approved(
            team, kind="webhook", name="CRM 回调", code="MLR-HOOK",
            body={"url": url, "payload": {"event": "refill_due"}}, audience="patient",
            product_class="non_drug", category="service", expires_on="2099-01-01",
        )  # fmt: skip
        publish({"category": "service", "audience": {"kind": "patient"},
                 "trigger": {"type": "event", "event": "refill_due"}, "start": "hook",
                 "steps": [{"id": "hook", "type": "webhook", "url": url,
                            "content_id": version.item_id,
                            "content_version_id": version.id}]})  # fmt: skip
        source = create_source(SYSTEM, "POS", "http")[0]
        person(source, "crash-1")
        track(source, "crash-1", "refill_due")  # queues the advance job in Redis
        db.session.remove()


def deliveries(app) -> list[tuple]:
    with app.app_context():
        rows = db.session.execute(
            sa.select(Delivery.status, Delivery.attempts, Delivery.key, Delivery.reason)
        )
        result = [tuple(row) for row in rows]
        db.session.remove()
        return result


def wait_for(predicate, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def worker(env) -> subprocess.Popen:
    return subprocess.Popen(
        [CDP, "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def test_worker_killed_mid_send_resends_with_the_same_key_once(world):
    app, env = world
    receiver = Receiver(hang_first=True)
    try:
        start_journey(app, receiver.url)
        first = worker(env)
        assert receiver.first_arrived.wait(90), f"the webhook was never called: {deliveries(app)}"
        for pid in children(first.pid):  # the work horse, mid-request
            os.kill(pid, signal.SIGKILL)
        first.send_signal(signal.SIGKILL)
        first.wait()
        ((status, _, key, _),) = deliveries(app)
        assert status == "sending"  # the outcome is unknown: the worker died mid-call
        receiver.hang_first = False
        second = worker(env)
        try:
            wait_for(lambda: deliveries(app)[0][0] == "sent", 120, "the send to be retried")
        finally:
            stop(second)
        ((status, attempts, _, _),) = deliveries(app)
        # Resent once, with the same idempotency key, so the receiver keeps one message.
        assert receiver.requests == [key, key]
        assert attempts == 2
    finally:
        receiver.close()


def test_jobs_lost_with_redis_are_found_again_in_the_database(world, redis_server):
    app, env = world
    receiver = Receiver(hang_first=False)
    try:
        start_journey(app, receiver.url)
        redis_server.restart()  # every queued job is gone
        second = worker(env)
        try:
            wait_for(lambda: receiver.requests, 120, "the sweeper to find the due instance")
            time.sleep(3)  # sweeps keep running: nothing may be sent again
        finally:
            stop(second)
        assert len(receiver.requests) == 1
        assert [row[0] for row in deliveries(app)] == ["sent"]
    finally:
        receiver.close()
