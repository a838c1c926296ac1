"""Loyalty figures: a 10,000-row member sync, coupon issue, and redemptions/s on 2 workers.

    .venv/bin/python bench/loyalty_bench.py [--members 10000] [--coupons 3000]
        [--clients 8] [--mode gunicorn|inproc|both] [--postgres URL [--no-sqlite]] [--keep]

On a fresh migrated SQLite file (and the empty PostgreSQL database given with
``--postgres``):

1. member sync: one partner uploads ``--members`` rows (card, phone, name, gender,
   birth date, store, two consents) through ``POST /api/v1/partner/members`` (inline, the
   whole request timed), then the same file again (all "unchanged");
2. issue: ``--coupons`` coupons to those members through the domain operation, one
   transaction each (budget and per-profile limit checked under the campaign lock);
3. redeem, every code attempted twice (two clients walk the codes in opposite orders),
   so each code is raced: exactly one 201 per code and a 409 for the other attempt.
   ``gunicorn``: ``gunicorn -w 2`` (sync workers; without Redis the follow-up jobs wait in
   the in-memory queue, as they would for ``cdp worker`` processes) driven by
   ``--clients`` keep-alive HTTP threads on the same machine; ``inproc``: 2 processes calling the
   app through Flask's test client (the full request path without sockets), i.e. what the
   two workers themselves can do when the load generator does not share their 2 CPUs.
   Prints redemptions/s, attempts/s, p50/p99, then checks the database: one live
   redemption per coupon and as many redemptions as 201s (double redemption = 0);
4. settle: the time the loyalty-events job takes to write those redemptions' events,
   feed changes and audit rows (``cdp.loyalty.settle``), which left the request path.

Target (issue #5): redeem >= 1,000 redemptions/s across 2 workers with no double
redemption; member sync of 10,000 rows < 5 s.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO))

SECRET, PII = "bench-secret", "bench-pii-key"
# The per-key rate limit (1,200/min by default) would cap the run at 20 calls/s per worker.
NO_RATE_LIMIT = "10000000 per minute"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values) or [float("nan")]
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def make_app(url: str):
    from cdp import create_app

    return create_app(
        {"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": SECRET, "PII_KEY": PII, "JOB_RETRIES": 0,
         "PARTNER_RATE_LIMIT": NO_RATE_LIMIT}
    )  # fmt: skip


def member_rows(n: int, store: str) -> list[dict]:
    return [
        {
            "card_no": f"LBX{i:09d}",
            "phone": f"136{i:08d}",
            "name": "王芳" if i % 2 else "李强",
            "gender": "F" if i % 2 else "M",
            "birth_date": f"19{50 + i % 50}-0{1 + i % 9}-1{i % 10}",
            "store_code": store,
            "joined_at": "2024-03-01T10:00:00+08:00",
            "consents": {"sms": bool(i % 3), "health_data": True},
        }
        for i in range(n)
    ]


def setup(url: str, members: int, coupons: int) -> dict:
    """Partner, store, products, members (timed sync), campaign and coupons (timed issue)."""
    from flask_migrate import upgrade

    from cdp.actors import SYSTEM
    from cdp.db import db
    from cdp.loyalty import campaigns, partners, products
    from cdp.loyalty import coupons as coupon_ops
    from cdp.models import Identity

    app = make_app(url)
    app.config["LOYALTY_SYNC_INLINE_ROWS"] = members
    with app.app_context():
        upgrade()
        partner, key = partners.create_partner(SYSTEM, "老百姓大药房", "lbx")
        partners.add_store(SYSTEM, partner.id, "LBX-CS-001", "长沙店", "长沙")
        products.import_demo_products(SYSTEM)
    client = app.test_client()
    headers = {"Authorization": f"Bearer {key}"}
    body = orjson.dumps(member_rows(members, "LBX-CS-001"))
    figures = {}
    for label in ("first", "again"):
        started = time.perf_counter()
        response = client.post(
            "/api/v1/partner/members", data=body, content_type="application/json", headers=headers
        )
        figures[label] = time.perf_counter() - started
        result = response.get_json()
        assert response.status_code == 200, result
        counts = {k: result[k] for k in ("created", "updated", "unchanged", "rejected")}
        print(f"  member sync ({label}): {members:,} rows in {figures[label]:.2f} s  {counts}")
    with app.app_context():
        campaign = campaigns.create_campaign(
            SYSTEM,
            {"name": "bench", "type": "amount_off", "value": 5, "budget": coupons,
             "valid_days": 30, "status": "active"},
        )  # fmt: skip
        profile_ids = db.session.scalars(
            db.select(Identity.profile_id)
            .where(Identity.type == "pharmacy_member")
            .order_by(Identity.id)
            .limit(coupons)
        ).all()
        started = time.perf_counter()
        codes = [
            coupon_ops.issue_coupon(SYSTEM, campaign.id, pid, f"bench-{pid}")[0].code
            for pid in profile_ids
        ]
        issue_seconds = time.perf_counter() - started
        db.session.remove()
        db.engine.dispose()
    print(
        f"  issue: {len(codes):,} coupons in {issue_seconds:.2f} s = {len(codes) / issue_seconds:,.0f}/s"
    )
    return {"key": key, "codes": codes, "sync": figures}


# --- redeem: gunicorn -------------------------------------------------------------------------


def http_redeem(port: int, key: str, codes: list[str], clients: int) -> dict:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    attempts = [(c, "a") for c in codes] + [(c, "b") for c in reversed(codes)]
    # Interleave the two passes so both attempts at a code run at about the same time.
    plans = [attempts[i::clients] for i in range(clients)]
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    lock = threading.Lock()

    def run(plan):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine, times = {}, []
        for code, side in plan:
            body = orjson.dumps(
                {"store_code": "LBX-CS-001", "order_id": f"{code}-{side}", "amount": 30}
            )
            started = time.perf_counter()
            conn.request(
                "POST", f"/api/v1/partner/coupons/{code}/redeem", body=body, headers=headers
            )
            response = conn.getresponse()
            response.read()
            times.append(time.perf_counter() - started)
            mine[response.status] = mine.get(response.status, 0) + 1
        conn.close()
        with lock:
            for status, n in mine.items():
                statuses[status] = statuses.get(status, 0) + n
            latencies.extend(times)

    started = time.perf_counter()
    threads = [threading.Thread(target=run, args=(plan,)) for plan in plans]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"seconds": time.perf_counter() - started, "statuses": statuses, "latencies": latencies}


@contextlib.contextmanager
def gunicorn(env: dict, log: Path):
    port = free_port()
    argv = [str(BIN / "gunicorn"), "-w", "2", "-k", "sync", "-b", f"127.0.0.1:{port}"]
    process = subprocess.Popen(
        [*argv, "--backlog", "2048", "cdp:create_app()"],
        cwd=REPO, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("gunicorn did not start:\n" + log.read_text()[-3000:])
            with contextlib.suppress(OSError):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    break
            time.sleep(0.1)
        yield port
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)


# --- redeem: in-process -----------------------------------------------------------------------


def _inproc_worker(url, key, plan, queue, start_event):
    app = make_app(url)
    client = app.test_client()
    headers = {"Authorization": f"Bearer {key}"}
    mine, times = {}, []
    start_event.wait()
    for code, side in plan:
        started = time.perf_counter()
        response = client.post(
            f"/api/v1/partner/coupons/{code}/redeem",
            json={"store_code": "LBX-CS-001", "order_id": f"{code}-{side}", "amount": 30},
            headers=headers,
        )
        times.append(time.perf_counter() - started)
        mine[response.status_code] = mine.get(response.status_code, 0) + 1
    queue.put((mine, times))


def inproc_redeem(url: str, key: str, codes: list[str]) -> dict:
    ctx = multiprocessing.get_context("spawn")
    queue, go = ctx.Queue(), ctx.Event()
    plans = [[(c, "a") for c in codes], [(c, "b") for c in reversed(codes)]]
    workers = [ctx.Process(target=_inproc_worker, args=(url, key, p, queue, go)) for p in plans]
    for w in workers:
        w.start()
    time.sleep(3)  # let both import and build their app before the clock starts
    started = time.perf_counter()
    go.set()
    results = [queue.get() for _ in workers]
    seconds = time.perf_counter() - started
    for w in workers:
        w.join()
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    for mine, times in results:
        for status, n in mine.items():
            statuses[status] = statuses.get(status, 0) + n
        latencies += times
    return {"seconds": seconds, "statuses": statuses, "latencies": latencies}


def check(url: str, codes: list[str], result: dict, label: str) -> None:
    import sqlalchemy as sa

    from cdp.db import db
    from cdp.models.loyalty import Coupon, Redemption

    app = make_app(url)
    with app.app_context():
        live = db.session.execute(
            sa.select(Redemption.coupon_id, sa.func.count())
            .where(Redemption.voided_at.is_(None))
            .group_by(Redemption.coupon_id)
        ).all()
        doubles = sum(1 for _, n in live if n > 1)
        redeemed = db.session.scalar(
            sa.select(sa.func.count()).select_from(Coupon).where(Coupon.status == "redeemed")
        )
        db.engine.dispose()
    ok, conflicts = result["statuses"].get(201, 0), result["statuses"].get(409, 0)
    seconds = result["seconds"]
    print(
        f"  redeem [{label}]: {ok:,} redemptions + {conflicts:,} 409s in {seconds:.2f} s = "
        f"{ok / seconds:,.0f} redemptions/s ({(ok + conflicts) / seconds:,.0f} attempts/s); "
        f"p50 {percentile(result['latencies'], 0.5) * 1000:.1f} ms, "
        f"p99 {percentile(result['latencies'], 0.99) * 1000:.1f} ms; other {dict((k, v) for k, v in result['statuses'].items() if k not in (201, 409))}"
    )
    verdict = "OK" if doubles == 0 and ok == len(codes) == redeemed == len(live) else "FAILED"
    print(
        f"  double-redemption check [{label}]: {len(live):,} coupons with a live redemption, "
        f"{doubles} with more than one, {redeemed:,} coupons redeemed, {ok:,} 201s -> {verdict}"
    )
    if verdict != "OK":
        raise SystemExit(1)


def settle(url: str, label: str) -> None:
    """Time the follow-up the redemptions left to the loyalty-events job (events, feed, audit)."""
    from cdp.db import db
    from cdp.loyalty.settle import settle_redemptions

    app = make_app(url)
    with app.app_context():
        started = time.perf_counter()
        settled = settle_redemptions()
        seconds = time.perf_counter() - started
        db.engine.dispose()
    rate = settled / seconds if settled else 0
    print(f"  settle [{label}]: {settled:,} redemptions in {seconds:.2f} s = {rate:,.0f}/s")


def reset_redemptions(url: str) -> None:
    import sqlalchemy as sa

    from cdp.db import db
    from cdp.models.loyalty import Coupon, Redemption

    app = make_app(url)
    with app.app_context():
        db.session.execute(sa.delete(Redemption))
        db.session.execute(sa.update(Coupon).values(status="issued", redeemed_at=None))
        db.session.commit()
        db.engine.dispose()


def run(url: str, args, workdir: Path, label: str) -> None:
    print(f"== {label}")
    state = setup(url, args.members, args.coupons)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDP_")}
    env.update(
        CDP_DATABASE_URL=url, CDP_SECRET_KEY=SECRET, CDP_PII_KEY=PII,
        CDP_INSTANCE_PATH=str(workdir / "instance"), CDP_LOGIN_RATE_LIMIT="100000 per minute",
        CDP_PARTNER_RATE_LIMIT=NO_RATE_LIMIT,
    )  # fmt: skip
    if args.mode in ("gunicorn", "both"):
        with gunicorn(env, workdir / "gunicorn.log") as port:
            result = http_redeem(port, state["key"], state["codes"], args.clients)
        check(url, state["codes"], result, "gunicorn -w 2, HTTP")
        settle(url, "events, feed and audit of those redemptions, one process")
    if args.mode in ("inproc", "both"):
        if args.mode == "both":
            reset_redemptions(url)
        result = inproc_redeem(url, state["key"], state["codes"])
        check(url, state["codes"], result, "2 processes, in-process client")
        if args.mode == "inproc":  # after a reset the settle cursor is past the new ids
            settle(url, "events, feed and audit of those redemptions, one process")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--coupons", type=int, default=3_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--mode", choices=("gunicorn", "inproc", "both"), default="both")
    parser.add_argument("--postgres", help="URL of an empty PostgreSQL database")
    parser.add_argument("--no-sqlite", action="store_true", help="only the PostgreSQL run")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="cdp-loyalty-bench-"))
    os.environ["CDP_INSTANCE_PATH"] = str(workdir / "instance")
    try:
        if not args.no_sqlite:
            run(f"sqlite:///{workdir / 'bench.db'}", args, workdir, "SQLite (WAL)")
        if args.postgres:
            run(args.postgres, args, workdir, "PostgreSQL")
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
