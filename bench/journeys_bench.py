"""Journey engine: instance steps per second, sweep cost with many waiting, event-to-send latency.

    .venv/bin/python bench/journeys_bench.py [--waiting 1000000] [--due 50000]
        [--events 1000] [--rate 200] [--sqlite PATH]

1. Steps: ``--due`` instances at the start of a non-send journey (split → branch on a trait
   → update nothing, wait 2 d) advanced by ``runner.advance`` in batches of
   JOURNEY_BATCH, in one process: instance steps per second (target: >= 5,000 / worker).
2. Sweep: the same claim the periodic sweeper runs, with ``--waiting`` instances waiting
   (next_run_at in the future) and then with ``--due`` of them due: its cost follows the
   due ones, not the waiting ones.
3. Latency: the embedded mode of ``make run`` (in-memory queue, worker thread): ``--events``
   events ingested at ``--rate`` per second, each entering a journey whose first step is
   a send; the time from ingestion to the provider call (a stand-in SMS channel), p50/p95
   (target: p95 < 1 s at 200 events/s).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import sqlalchemy as sa  # noqa: E402
from flask_migrate import upgrade  # noqa: E402

from cdp import create_app  # noqa: E402
from cdp.actors import SYSTEM, Actor  # noqa: E402
from cdp.auth import accounts  # noqa: E402
from cdp.db import db, utcnow  # noqa: E402
from cdp.ingest.pipeline import ingest  # noqa: E402
from cdp.ingest.tasks import hand_off  # noqa: E402
from cdp.models import Profile  # noqa: E402
from cdp.queue import BackgroundLoop, tasks  # noqa: E402
from cdp.sources import create_source, get_source  # noqa: E402
from journeys.channels import CHANNELS, Channel, Sent  # noqa: E402
from journeys.engine import runner  # noqa: E402
from journeys.models import Journey, JourneyInstance, JourneyVersion  # noqa: E402
from journeys.tasks import claim_due  # noqa: E402

STEPS = {
    "category": "service",
    "audience": {"kind": "patient"},
    "trigger": {"type": "event", "event": "bench"},
    "start": "ab",
    "steps": [
        {"id": "ab", "type": "split", "paths": [{"percent": 50, "next": "city"},
                                                {"percent": 50, "next": "city"}]},
        {"id": "city", "type": "branch", "then": "w", "else": "w",
         "condition": {"type": "trait", "trait": "city", "op": "equals", "value": "上海"}},
        {"id": "w", "type": "wait", "duration": "2d"},
    ],
}  # fmt: skip


def make_app(path: str, **config):
    app = create_app(
        {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{path}", "SECRET_KEY": "bench", "PII_KEY": "b",
         "JOURNEY_GLOBAL_CONTROL_PERCENT": 0, "JOURNEY_QUIET_HOURS": ("00:00", "00:00"),
         **config}
    )  # fmt: skip
    with app.app_context():
        upgrade()
    return app


def publish(definition: dict) -> tuple[int, int]:
    journey = Journey(name="bench", status="published", draft=definition, live_version=1)
    db.session.add(journey)
    db.session.flush()
    version = JourneyVersion(journey_id=journey.id, number=1, definition=definition)
    db.session.add(version)
    db.session.commit()
    return journey.id, version.id


def add_profiles(n: int) -> None:
    now = utcnow()
    rows = [{"kind": "patient", "traits": {"city": "上海" if i % 3 else "北京"},
             "created_at": now, "updated_at": now} for i in range(n)]  # fmt: skip
    for start in range(0, n, 50_000):
        db.session.execute(sa.insert(Profile), rows[start : start + 50_000])
    db.session.commit()


def add_instances(journey_id, version_id, profile_ids, step, next_run_at, state) -> None:
    now = utcnow()
    base = {"journey_id": journey_id, "version_id": version_id, "entry_key": "", "rotation": 0,
            "step_id": step, "state": state, "next_run_at": next_run_at, "step_entered_at": now,
            "entered_at": now, "holdout": False, "test": False, "context": {}, "visits": {}}  # fmt: skip
    for start in range(0, len(profile_ids), 50_000):
        chunk = profile_ids[start : start + 50_000]
        db.session.execute(
            sa.insert(JourneyInstance), [{**base, "profile_id": pid} for pid in chunk]
        )
    db.session.commit()


def timed(fn, *args):
    started = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - started, result


def bench_steps_and_sweep(path: str, waiting: int, due: int) -> None:
    app = make_app(path)
    with app.app_context():
        add_profiles(waiting + due)
        journey_id, version_id = publish(STEPS)
        ids = list(db.session.scalars(sa.select(Profile.id).order_by(Profile.id)))
        future = utcnow() + timedelta(days=30)
        started = time.perf_counter()
        add_instances(journey_id, version_id, ids[:waiting], "w", future, "waiting")
        print(f"  {waiting:,} waiting instances inserted in {time.perf_counter() - started:.1f} s")
        seconds, claimed = timed(claim_due, utcnow(), due)
        print(f"  sweep with {waiting:,} waiting, 0 due: {seconds * 1000:.1f} ms ({len(claimed)})")
        add_instances(journey_id, version_id, ids[waiting:], "ab", utcnow(), "active")
        now = utcnow() + timedelta(seconds=1)
        seconds, claimed = timed(claim_due, now, due)
        print(
            f"  sweep with {waiting:,} waiting, {due:,} due: {seconds * 1000:.1f} ms "
            f"({len(claimed):,} claimed, {seconds / max(len(claimed), 1) * 1e6:.1f} µs each)"
        )
        batch = int(app.config["JOURNEY_BATCH"])
        started = time.perf_counter()
        for start in range(0, len(claimed), batch):
            runner.advance(claimed[start : start + batch], now=now)
        seconds = time.perf_counter() - started
        steps = len(claimed) * 3  # split, branch, wait
        print(
            f"  advanced {len(claimed):,} instances ({steps:,} steps) in {seconds:.1f} s: "
            f"{steps / seconds:,.0f} steps/s, {len(claimed) / seconds:,.0f} instances/s"
        )
        db.session.remove()
        db.engine.dispose()


class StopwatchSms(Channel):
    """Records when each message reached 'the provider'."""

    name = "sms"
    idempotent = True
    arrived: dict[str, float] = {}

    def send(self, out):
        type(self).arrived[out.message["text"].rsplit(" ", 1)[-1]] = time.perf_counter()
        return Sent(provider_id=out.key, account="bench", response={})


def bench_latency(path: str, events: int, rate: float) -> None:
    from cdp.content import operations as content_ops

    CHANNELS["sms"] = StopwatchSms
    app = make_app(path, JOURNEY_SWEEP_SECONDS=1)
    with app.app_context():
        people = {}
        for role in ("marketer", "reviewer"):
            user, _ = accounts.create_user(SYSTEM, f"{role}@bench.cn", role, "bench password 1")
            people[role] = Actor(kind="user", user_id=user.id, role=role)
        version = content_ops.create_item(
            people["marketer"], "latency", "sms", body={"text": "【康护】您的订单已确认 {{ context.n }}"},
            audience="patient", product_class="non_drug", category="service",
            expires_on="2099-01-01", therapeutic_area="",
        )  # fmt: skip
        content_ops.submit(people["marketer"], version.id)
        version = content_ops.approve(people["reviewer"], version.id, "ok", approval_code="MLR-B")
        definition = {
            "category": "service", "audience": {"kind": "patient"},
            "trigger": {"type": "event", "event": "order_confirmed"}, "start": "s",
            "steps": [{"id": "s", "type": "send", "channel": "sms", "content_id": version.item_id,
                       "content_version_id": version.id}],
        }  # fmt: skip
        publish(definition)
        source, _ = create_source(SYSTEM, "bench", "http")
        source_id = source.id
        db.session.remove()
    loop = BackgroundLoop(app, None)
    with app.app_context():
        loop.tasks = tasks()
    loop.start()
    sent_at: dict[str, float] = {}
    try:
        interval = 1.0 / rate
        next_at = time.perf_counter()
        with app.app_context():
            source = get_source(source_id)
            for n in range(events):
                message = {"type": "track", "userId": f"lat-{n}", "event": "order_confirmed",
                           "properties": {"n": str(n)}}  # fmt: skip
                sent_at[str(n)] = time.perf_counter()
                ingest(source, [message])
                hand_off()
                next_at += interval
                time.sleep(max(0.0, next_at - time.perf_counter()))
            db.session.remove()
        deadline = time.perf_counter() + 60
        while len(StopwatchSms.arrived) < events and time.perf_counter() < deadline:
            time.sleep(0.2)
    finally:
        loop.stop()
    latencies = sorted(StopwatchSms.arrived[k] - sent_at[k] for k in StopwatchSms.arrived)
    if not latencies:
        print("  no message arrived")
        return
    p95 = latencies[int(len(latencies) * 0.95) - 1]
    print(
        f"  {len(latencies):,}/{events:,} sends at {rate:.0f} events/s: "
        f"p50 {statistics.median(latencies) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
        f"max {latencies[-1] * 1000:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waiting", type=int, default=200_000)
    parser.add_argument("--due", type=int, default=20_000)
    parser.add_argument("--events", type=int, default=600)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--sqlite", default=None, help="directory for the bench databases")
    args = parser.parse_args()
    directory = args.sqlite or tempfile.mkdtemp(prefix="cdp-journeys-bench-")
    print("journey steps and sweep (SQLite)")
    bench_steps_and_sweep(str(Path(directory) / "steps.db"), args.waiting, args.due)
    print("event-to-send latency (embedded mode, SQLite)")
    thread = threading.Thread(
        target=bench_latency, args=(str(Path(directory) / "latency.db"), args.events, args.rate)
    )
    thread.start()
    thread.join()


if __name__ == "__main__":
    main()
