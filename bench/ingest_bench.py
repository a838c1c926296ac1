"""Drive the tracking API through gunicorn and compare it with a raw bulk INSERT of the same rows.

    .venv/bin/python bench/ingest_bench.py [--seconds 25] [--batches N] [--clients 4]
        [--workers 2] [--track-rate 300] [--track-seconds 10] [--postgres URL] [--redis URL]
        [--keep]

For each database (a fresh migrated SQLite file, and the PostgreSQL database given with
``--postgres``, which must be empty), it starts ``gunicorn -w 2`` (sync workers) on
``cdp:create_app()``, creates an ``http`` source, then:

1. posts batches of 100 events to ``/v1/batch`` from ``--clients`` threads for
   ``--seconds`` (or ``--batches`` in all). Each event carries two identifiers, a
   ``userId`` plus ``traits.phone`` or a WeChat openid in ``context.externalIds``;
   30% of events are from new people, 70% from people seen before. Prints events/s
   and p50/p99 batch latency;
2. inserts the same number of event rows straight into the same database with
   SQLAlchemy Core ``executemany`` (once in one transaction, once in transactions of
   100 rows like the API's group commit) and prints the ratio;
3. sends single ``/v1/track`` calls at a fixed rate (open loop, latency measured from
   the scheduled send time) and prints p50/p99.

Downstream jobs are not run during the bench: without ``--redis`` each web process queues
them in its in-memory queue (gunicorn does not start the embedded worker, ``cdp serve``
does); with ``--redis URL`` they are queued there for ``cdp worker`` processes. Either way
this measures ingestion alone (one queued drain job at a time, see cdp/ingest/tasks.py).

On PostgreSQL the tables are ANALYZEd after the warm-up, as autovacuum would have done in
any database older than a minute (without statistics the planner may cache seq-scan plans).

Besides wall-clock rates it prints the CPU the gunicorn processes used per event: the
machine is often shared, and CPU per event is steadier than events per second.

Targets (docs/performance.md): >= 20,000 events/s; /v1/track p99 < 20 ms at 300 req/s.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import itertools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO))

BATCH_SIZE = 100
NEW_PEOPLE = 0.30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Server:
    """A gunicorn master with sync workers on a fresh port, in its own process group."""

    def __init__(self, env: dict, workers: int, log: Path):
        self.env, self.workers, self.log = env, workers, log
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Server:
        argv = [str(BIN / "gunicorn"), "-w", str(self.workers), "-k", "sync"]
        argv += ["-b", f"127.0.0.1:{self.port}", "--backlog", "2048", "cdp:create_app()"]
        self.process = subprocess.Popen(
            argv,
            cwd=REPO,
            env=self.env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit("gunicorn exited:\n" + self.log.read_text()[-3000:])
            with contextlib.suppress(OSError):
                if request(self.port, "GET", "/healthz")[0] == 200:
                    return self
            time.sleep(0.1)
        raise SystemExit("gunicorn did not start:\n" + self.log.read_text()[-3000:])

    def cpu_seconds(self) -> float:
        """User + system CPU of the master and its workers so far (Linux /proc)."""
        tick = os.sysconf("SC_CLK_TCK")
        pids = [self.process.pid]
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
            pids += [int(pid) for pid in children.read_text().split()]
        total = 0
        for pid in pids:
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / tick

    def worker_rss_mb(self) -> list[float]:
        """Resident memory of each worker, MB (to see that it stays flat)."""
        sizes = []
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
            for pid in children.read_text().split():
                with contextlib.suppress(OSError):
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmRSS:"):
                            sizes.append(int(line.split()[1]) / 1024)
        return sizes

    def __exit__(self, *exc) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def request(port: int, method: str, path: str, body: bytes | None = None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class People:
    """Who the next event is about: 30% someone new, 70% someone already sent."""

    def __init__(self, seed: int):
        self.lock = threading.Lock()
        self.count = 0
        self.random = random.Random(seed)

    def pick(self) -> int:
        with self.lock:
            if self.count == 0 or self.random.random() < NEW_PEOPLE:
                self.count += 1
                return self.count - 1
            return self.random.randrange(self.count)


def make_event(person: int, rng: random.Random, run: str) -> dict:
    event = {
        "type": "track",
        "messageId": f"{run}-{uuid.uuid4().hex}",
        "userId": f"member-{person}",
        "event": rng.choice(
            ("Product Viewed", "Article Read", "Coupon Redeemed", "Order Completed")
        ),
        "properties": {"sku": f"SKU-{rng.randrange(500)}", "price": rng.randrange(5, 500)},
        "context": {"library": {"name": "bench", "version": "1"}},
        "timestamp": datetime.now(UTC).isoformat(),
    }
    if person % 2:
        # 135xxxxxxxx: a valid mainland mobile range, one number per person.
        event["traits"] = {"phone": f"135{person % 10**8:08d}"}
    else:
        event["context"]["externalIds"] = [
            {"type": "wechat_openid", "collection": "wx-bench", "id": f"o-{person:012d}"}
        ]
    return event


def drive_batches(port, key, people, clients, seconds, batches, run) -> dict:
    auth = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
    headers = {"Content-Type": "application/json", "Authorization": auth}
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    accepted = itertools.count()
    counter = itertools.count()
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds if not batches else float("inf")

    def client(number: int) -> None:
        rng = random.Random(number)
        while time.perf_counter() < deadline:
            if batches and next(counter) >= batches:
                return
            body = orjson.dumps(
                {"batch": [make_event(people.pick(), rng, run) for _ in range(BATCH_SIZE)]}
            )
            started = time.perf_counter()
            status, payload = request(port, "POST", "/v1/batch", body, headers)
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
                statuses[status] = statuses.get(status, 0) + 1
            if status == 200:
                for _ in range(orjson.loads(payload)["accepted"]):
                    next(accepted)

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    events = next(accepted)
    return {"events": events, "seconds": wall, "latencies": latencies, "statuses": statuses}


def drive_track(port, key, people, rate, seconds, run) -> dict:
    auth = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
    headers = {"Content-Type": "application/json", "Authorization": auth}
    rng = random.Random(7)
    bodies = [orjson.dumps(make_event(people.pick(), rng, run)) for _ in range(int(rate * seconds))]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()

    def send(body: bytes, scheduled: float) -> None:
        status, _ = request(port, "POST", "/v1/track", body, headers)
        with lock:
            latencies.append(time.perf_counter() - scheduled)
            statuses[status] = statuses.get(status, 0) + 1

    interval = 1 / rate
    with ThreadPoolExecutor(max_workers=32) as pool:
        start = time.perf_counter() + 0.05
        for n, body in enumerate(bodies):
            scheduled = start + n * interval
            pause = scheduled - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            pool.submit(send, body, scheduled)
    return {"latencies": latencies, "statuses": statuses, "sent": len(bodies)}


def raw_inserts(app, source_id: str, rows: int) -> dict:
    """Insert ``rows`` event rows with Core executemany: one transaction, then 100 per commit."""
    import sqlalchemy as sa

    from cdp.db import db, utcnow
    from cdp.models import Event

    rng = random.Random(3)
    now = utcnow()

    def make(tag: str) -> list[dict]:
        return [
            {
                "source_id": source_id,
                "message_id": f"raw-{tag}-{n}",
                "profile_id": None,
                "type": "track",
                "name": "Product Viewed",
                "timestamp": now,
                "received_at": now,
                "properties": {"sku": f"SKU-{rng.randrange(500)}", "price": rng.randrange(500)},
                "context": {"library": {"name": "bench", "version": "1"}},
            }
            for n in range(rows)
        ]

    timings = {}
    with app.app_context():
        single, grouped = make("one"), make("grouped")
        with db.engine.connect() as conn:
            started = time.perf_counter()
            with conn.begin():
                conn.execute(sa.insert(Event), single)
            timings["one transaction"] = time.perf_counter() - started
            started = time.perf_counter()
            for start in range(0, rows, BATCH_SIZE):
                with conn.begin():
                    conn.execute(sa.insert(Event), grouped[start : start + BATCH_SIZE])
            timings[f"{BATCH_SIZE} rows per transaction"] = time.perf_counter() - started
        db.engine.dispose()
    return timings


def analyze(url: str) -> None:
    """Collect planner statistics, as autovacuum does within a minute in a real database."""
    import sqlalchemy as sa

    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
    engine.dispose()


def run_cdp(env: dict, *args: str) -> str:
    done = subprocess.run(
        [str(BIN / "cdp"), *args], env=env, cwd=REPO, capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(f"cdp {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def drain_backlog(app, env: dict) -> None:
    """Resolve what the API acked (deferred resolution) with one ``cdp drain`` process."""
    import sqlalchemy as sa

    from cdp.db import db

    with app.app_context():
        pending = db.session.scalar(
            sa.text("SELECT coalesce(sum(message_count), 0) FROM inbound_batches")
        )
        db.session.remove()
    if not pending:
        print(
            "drain: nothing pending (resolution in the request: CDP_INGEST_DEFER_RESOLUTION=false)"
        )
        return
    started = time.perf_counter()
    usage = os.times()
    run_cdp(env, "drain")
    seconds = time.perf_counter() - started
    child = os.times()
    cpu = (child.children_user - usage.children_user) + (
        child.children_system - usage.children_system
    )
    print(
        f"drain: `cdp drain` resolved {pending:,} acked events (identities, merges, events, "
        f"outbox; then segments and journeys processed them) in {seconds:.1f} s = "
        f"{pending / seconds:,.0f} events/s, one process, {cpu / pending * 1e6:,.0f} µs CPU per event"
    )


def bench_database(label: str, url: str, args, workdir: Path) -> None:
    print(f"\n== {label}: {url.split('@')[-1]}")
    env = {
        **os.environ,
        "CDP_DATABASE_URL": url,
        "CDP_INSTANCE_PATH": str(workdir / "instance"),
        "PYTHONWARNINGS": "ignore",
    }
    env.pop("CDP_REDIS_URL", None)
    if args.redis:
        # Jobs queue in Redis (no worker runs during the bench): measures ingestion alone.
        env["CDP_REDIS_URL"] = args.redis
    mode = "jobs queued in Redis" if args.redis else "jobs queued in each web process's memory"
    print(f"   mode: {mode} (not run during the bench)")
    run_cdp(env, "db", "upgrade")
    created = json.loads(
        run_cdp(env, "sources", "create", "--name", "bench", "--kind", "http", "--json")
        .strip()
        .splitlines()[-1]
    )
    key, source_id = created["write_key"], created["id"]
    people = People(seed=1)
    run = uuid.uuid4().hex[:8]
    log = workdir / f"gunicorn-{label}.log"
    with Server(env, args.workers, log) as server:
        # Warm up both workers (imports, first connections, schema caches).
        drive_batches(server.port, key, people, args.clients, 0, args.clients * 2, run + "w")
        if url.startswith("postgresql"):
            analyze(url)
        rss = server.worker_rss_mb()
        cpu = server.cpu_seconds()
        result = drive_batches(
            server.port, key, people, args.clients, args.seconds, args.batches, run
        )
        cpu = server.cpu_seconds() - cpu
        lat = result["latencies"]
        rate = result["events"] / result["seconds"]
        print(
            f"/v1/batch ({BATCH_SIZE} events, {args.clients} clients, {args.workers} sync "
            f"workers): {result['events']:,} events in {result['seconds']:.1f} s = "
            f"{rate:,.0f} events/s; batch latency p50 {percentile(lat, 0.5) * 1000:.0f} ms, "
            f"p99 {percentile(lat, 0.99) * 1000:.0f} ms; statuses {result['statuses']}"
        )
        per_event = cpu / max(result["events"], 1) * 1e6
        print(f"  gunicorn CPU {cpu:.1f} s = {per_event:,.0f} µs per event")
        print(f"  people: {people.count:,} distinct")
        cpu = server.cpu_seconds()
        track = drive_track(server.port, key, people, args.track_rate, args.track_seconds, run)
        cpu = server.cpu_seconds() - cpu
        tl = track["latencies"]
        slow = sum(1 for t in tl if t > 0.020) / max(len(tl), 1)
        print(
            f"/v1/track at {args.track_rate} req/s for {args.track_seconds} s: "
            f"{track['sent']} sent, p50 {percentile(tl, 0.5) * 1000:.1f} ms, "
            f"p99 {percentile(tl, 0.99) * 1000:.1f} ms, max {max(tl) * 1000:.0f} ms, "
            f"{slow:.1%} over 20 ms; statuses {track['statuses']}; "
            f"gunicorn CPU {cpu / max(track['sent'], 1) * 1e3:.2f} ms per request"
        )
        before = ", ".join(f"{mb:.0f}" for mb in rss)
        after = ", ".join(f"{mb:.0f}" for mb in server.worker_rss_mb())
        print(f"  worker RSS after warm-up: {before} MB; at the end: {after} MB")
    from cdp import create_app

    app = create_app({"SQLALCHEMY_DATABASE_URI": url})
    if not args.no_drain:
        drain_backlog(app, env)
    timings = raw_inserts(app, source_id, result["events"])
    for how, seconds in timings.items():
        raw_rate = result["events"] / seconds
        print(
            f"raw Core executemany INSERT of {result['events']:,} rows ({how}): "
            f"{seconds:.2f} s = {raw_rate:,.0f} rows/s; API / raw = {rate / raw_rate:.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=25, help="batch phase duration")
    parser.add_argument("--batches", type=int, default=0, help="batches in all (overrides time)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--track-rate", type=float, default=300)
    parser.add_argument("--track-seconds", type=float, default=10)
    parser.add_argument("--postgres", help="URL of an empty PostgreSQL database to bench too")
    parser.add_argument("--redis", help="Redis URL: queue jobs there instead of running them")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--no-drain", action="store_true", help="leave the backlog unresolved")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="cdp-ingest-bench-"))
    os.environ["CDP_INSTANCE_PATH"] = str(workdir / "instance")
    try:
        if not args.no_sqlite:
            bench_database("sqlite", f"sqlite:///{workdir / 'bench.db'}", args, workdir)
        if args.postgres:
            bench_database("postgresql", args.postgres, args, workdir)
    finally:
        if args.keep:
            print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
