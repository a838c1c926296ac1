"""Channel connectors through the real endpoints under gunicorn: WeChat safe-mode pushes/s and
POS transaction line items/s.

    .venv/bin/python bench/connectors_bench.py [--pushes 20000] [--clients 48] [--workers 1]
        [--threads 32] [--pos-batches 200] [--pos-txns 100] [--pos-lines 5] [--postgres URL]
        [--only wechat|pos] [--keep]

For each database (a fresh migrated SQLite file; and ``--postgres URL``, an empty database,
if given) it starts ``gunicorn -k gthread -w W --threads T`` on ``cdp:create_app()`` and
creates the sources with ``cdp sources create``. Then:

1. **WeChat push, safe mode.** ``--pushes`` distinct pushes (menu clicks, article views,
   text messages, follows from QR codes) from 5,000 followers, each encrypted with
   wechatpy exactly as WeChat sends them (AES-256-CBC, ``msg_signature``), generated before
   the clock starts. ``--clients`` threads post them over keep-alive connections; each
   answer must be ``success`` (given only after the commit). Prints pushes/s, latency p50 /
   p99, and how many events the database holds afterwards (must equal the pushes). Then 5%
   are sent again (WeChat's retries): all must be acknowledged and none stored twice.
2. **POS.** ``--pos-batches`` signed requests of ``--pos-txns`` transactions with
   ``--pos-lines`` line items each, posted by 4 threads. Prints line items/s and
   transactions/s.

Targets (issue 4): WeChat >= 2,000 events/s in safe mode; POS >= 5,000 line items/s.
On SQLite one worker with many threads beats two workers (one writer at a time: the
second process mostly waits for the lock); on PostgreSQL try ``--workers 2``. The client
is a lean raw-socket HTTP/1.1 keep-alive client (about 5% of a core), so the server gets
the machine.
Jobs: without ``CDP_REDIS_URL`` the downstream work is queued in each web process's
in-memory Redis and not run during the bench (gunicorn does not start the embedded worker).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import http.client
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
from pathlib import Path
from urllib.parse import urlencode

import orjson

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO))

APP_ID = "wx0123456789abcdef"
TOKEN = "benchtoken"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
POS_SECRET = "pos-bench-secret-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class Server:
    """gunicorn with gthread workers on a fresh port, in its own process group."""

    def __init__(self, env: dict, workers: int, threads: int, log: Path):
        self.env, self.workers, self.threads, self.log = env, workers, threads, log
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Server:
        argv = [str(BIN / "gunicorn"), "-w", str(self.workers), "-k", "gthread"]
        argv += ["--threads", str(self.threads), "--keep-alive", "30", "--backlog", "2048"]
        argv += ["-b", f"127.0.0.1:{self.port}", "cdp:create_app()"]
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
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    return self
            time.sleep(0.1)
        raise SystemExit("gunicorn did not start:\n" + self.log.read_text()[-3000:])

    def __exit__(self, *exc) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def run_cdp(env: dict, *args: str) -> dict:
    done = subprocess.run(
        [str(BIN / "cdp"), *args], env=env, cwd=REPO, capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(f"cdp {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    lines = done.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}


def _raw_request(port: int, path: str, body: bytes, headers: dict) -> bytes:
    head = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _read_response(sock: socket.socket, buffer: bytearray) -> tuple[int, bytes]:
    """One HTTP/1.1 response with Content-Length from a keep-alive socket (a lean client:
    the bench machine's two cores are shared by the server and this client)."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        buffer += chunk
    end = buffer.index(b"\r\n\r\n") + 4
    head = bytes(buffer[:end])
    status = int(head[9:12])
    lower = head.lower()
    at = lower.find(b"content-length:")
    length = int(lower[at + 15 : lower.index(b"\r\n", at)]) if at >= 0 else 0
    while len(buffer) < end + length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        buffer += chunk
    body = bytes(buffer[end : end + length])
    del buffer[: end + length]
    return status, body


def drive(port: int, requests: list[tuple[str, bytes, dict]], clients: int) -> dict:
    """Post every (path, body, headers) from ``clients`` keep-alive threads; time each."""
    raw = [_raw_request(port, *r) for r in requests]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    bad: list[bytes] = []
    lock = threading.Lock()
    position = iter(range(len(raw)))

    def connect() -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def client() -> None:
        sock, buffer = connect(), bytearray()
        mine, codes = [], {}
        while True:
            with lock:
                index = next(position, None)
            if index is None:
                break
            started = time.perf_counter()
            try:
                sock.sendall(raw[index])
                status, payload = _read_response(sock, buffer)
            except OSError:
                sock.close()
                sock, buffer = connect(), bytearray()
                codes[0] = codes.get(0, 0) + 1
                continue
            mine.append(time.perf_counter() - started)
            codes[status] = codes.get(status, 0) + 1
            if status != 200 and len(bad) < 3:
                bad.append(payload[:300])
        sock.close()
        with lock:
            latencies.extend(mine)
            for code, n in codes.items():
                statuses[code] = statuses.get(code, 0) + n

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {
        "seconds": time.perf_counter() - started,
        "latencies": latencies,
        "statuses": statuses,
        "bad": bad,
    }


# --- WeChat -------------------------------------------------------------------------------


def wechat_pushes(source_id: str, count: int, seed: int) -> list[tuple[str, bytes, dict]]:
    from wechatpy.crypto import PrpCrypto, WeChatCrypto
    from wechatpy.utils import WeChatSigner

    rng = random.Random(seed)
    crypto = WeChatCrypto(TOKEN, AES_KEY, APP_ID)
    prp = PrpCrypto(crypto.key)
    out = []
    base = 1_700_000_000 + seed * 10_000_000
    for n in range(count):
        openid = f"o{hashlib.md5(str(rng.randrange(5000)).encode()).hexdigest()[:27]}"
        created = base + n
        kind = rng.random()
        head = (
            f"<xml><ToUserName><![CDATA[gh_bench]]></ToUserName><FromUserName><![CDATA[{openid}]]>"
            f"</FromUserName><CreateTime>{created}</CreateTime>"
        )
        if kind < 0.4:
            body = f"<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[CLICK]]></Event><EventKey><![CDATA[MENU_{n % 7}]]></EventKey>"
        elif kind < 0.7:
            body = f"<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[VIEW]]></Event><EventKey><![CDATA[https://m.carepath.cn/a/{n % 300}]]></EventKey>"
        elif kind < 0.9:
            body = f"<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[请问药品 {n % 50} 怎么服用]]></Content><MsgId>{seed}{n:012d}</MsgId>"
        else:
            body = f"<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event><EventKey><![CDATA[qrscene_HCP_{n % 40}]]></EventKey><Ticket><![CDATA[T{n}]]></Ticket>"
        xml = head + body + "</xml>"
        encrypted = prp.encrypt(xml, APP_ID).decode()
        timestamp, nonce = str(created), str(rng.randrange(10**9))
        signer = WeChatSigner()
        signer.add_data(TOKEN, timestamp, nonce, encrypted)
        plain = WeChatSigner()
        plain.add_data(TOKEN, timestamp, nonce)
        query = urlencode(
            {
                "signature": plain.signature,
                "timestamp": timestamp,
                "nonce": nonce,
                "openid": openid,
                "encrypt_type": "aes",
                "msg_signature": signer.signature,
            }
        )
        payload = (
            "<xml><ToUserName><![CDATA[gh_bench]]></ToUserName>"
            f"<Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"
        ).encode()
        out.append(
            (f"/connectors/wechat/{source_id}?{query}", payload, {"Content-Type": "text/xml"})
        )
    return out


def count_events(url: str, source_id: str) -> int:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.connect() as conn:
        total = conn.scalar(
            sa.text("SELECT count(*) FROM events WHERE source_id = :s"), {"s": source_id}
        )
    engine.dispose()
    return int(total)


def drain(env: dict) -> None:
    """Resolve acked pushes (deferred resolution: gunicorn runs no worker) before counting."""
    subprocess.run([str(BIN / "cdp"), "drain"], env=env, cwd=REPO, check=True, capture_output=True)


def bench_wechat(port: int, url: str, source_id: str, args, env: dict) -> None:
    warm = wechat_pushes(source_id, 400, seed=1)
    drive(port, warm, args.clients)
    drain(env)
    pushes = wechat_pushes(source_id, args.pushes, seed=2)
    before = count_events(url, source_id)
    result = drive(port, pushes, args.clients)
    drain(env)
    stored = count_events(url, source_id) - before
    lat = result["latencies"]
    rate = len(pushes) / result["seconds"]
    print(
        f"WeChat safe-mode push: {len(pushes):,} pushes, {args.clients} clients, "
        f"{args.workers}x{args.threads} gthread: {result['seconds']:.1f} s = {rate:,.0f} events/s; "
        f"latency p50 {percentile(lat, 0.5) * 1000:.1f} ms, p99 {percentile(lat, 0.99) * 1000:.1f} ms; "
        f"statuses {result['statuses']}; events stored {stored:,}"
    )
    if result["bad"]:
        print(f"  sample errors: {result['bad']}")
    retries = pushes[::20]
    again = drive(port, retries, args.clients)
    drain(env)
    extra = count_events(url, source_id) - before - stored
    print(
        f"  retries: {len(retries):,} re-sent, statuses {again['statuses']}, stored again {extra}"
    )


# --- POS ----------------------------------------------------------------------------------


def pos_requests(source_id: str, batches: int, txns: int, lines: int, seed: int):
    rng = random.Random(seed)
    out = []
    for b in range(batches):
        transactions = []
        for t in range(txns):
            items = [
                {
                    "line_no": i + 1,
                    "drug_code": f"D{rng.randrange(1, 40):03d}",
                    "approval_no": f"国药准字H{rng.randrange(10**7, 10**8)}",
                    "name": "阿托伐他汀钙片 20mg×30片",
                    "qty": rng.randrange(1, 4),
                    "unit_price": 98.5,
                    "days_of_supply": 30,
                    "rx": rng.random() < 0.5,
                    "prescription_id": f"RX{rng.randrange(10**8)}",
                }
                for i in range(lines)
            ]
            transactions.append(
                {
                    "txn_no": f"{seed}-{b}-{t}",
                    "store_code": f"S{rng.randrange(200):03d}",
                    "txn_time": "2025-03-01T10:15:00+08:00",
                    "member": {"card_no": f"M{rng.randrange(50_000):08d}"},
                    "lines": items,
                    "coupons": ["CP-1"] if rng.random() < 0.1 else [],
                    "points_used": 0,
                }
            )
        body = orjson.dumps({"transactions": transactions})
        timestamp, nonce = str(int(time.time())), uuid.uuid4().hex
        signature = hmac.new(
            POS_SECRET.encode(), f"{timestamp}\n{nonce}\n".encode() + body, hashlib.sha256
        ).hexdigest()
        headers = {
            "Content-Type": "application/json",
            "X-CarePath-Timestamp": timestamp,
            "X-CarePath-Nonce": nonce,
            "X-CarePath-Signature": signature,
        }
        out.append((f"/connectors/pos/{source_id}/transactions", body, headers))
    return out


def bench_pos(port: int, source_id: str, args) -> None:
    drive(port, pos_requests(source_id, 4, args.pos_txns, args.pos_lines, seed=1), 4)
    requests = pos_requests(source_id, args.pos_batches, args.pos_txns, args.pos_lines, seed=2)
    result = drive(port, requests, 4)
    lines = args.pos_batches * args.pos_txns * args.pos_lines
    txns = args.pos_batches * args.pos_txns
    lat = result["latencies"]
    print(
        f"POS: {args.pos_batches} requests x {args.pos_txns} transactions x {args.pos_lines} lines "
        f"= {lines:,} line items in {result['seconds']:.1f} s = {lines / result['seconds']:,.0f} "
        f"line items/s ({txns / result['seconds']:,.0f} transactions/s); request p50 "
        f"{percentile(lat, 0.5) * 1000:.0f} ms, p99 {percentile(lat, 0.99) * 1000:.0f} ms; "
        f"statuses {result['statuses']}"
    )
    if result["bad"]:
        print(f"  sample errors: {result['bad']}")


def bench_database(label: str, url: str, args, workdir: Path) -> None:
    print(f"\n== {label}: {url.split('@')[-1]}")
    env = {
        **os.environ,
        "CDP_DATABASE_URL": url,
        "CDP_INSTANCE_PATH": str(workdir / "instance"),
        "PYTHONWARNINGS": "ignore",
    }
    env.pop("CDP_REDIS_URL", None)
    subprocess.run(
        [str(BIN / "cdp"), "db", "upgrade"], env=env, cwd=REPO, check=True, capture_output=True
    )
    wechat = run_cdp(
        env, "sources", "create", "--name", "bench OA", "--kind", "wechat",
        "--option", f"app_id={APP_ID}", "--option", f"token={TOKEN}",
        "--option", f"aes_key={AES_KEY}", "--json",
    )  # fmt: skip
    pos = None
    if args.only in (None, "pos"):
        pos = run_cdp(
            env, "sources", "create", "--name", "bench POS", "--kind", "pos",
            "--option", "partner=benchchain", "--option", f"secret={POS_SECRET}", "--json",
        )  # fmt: skip
    with Server(env, args.workers, args.threads, workdir / f"gunicorn-{label}.log") as server:
        if args.only in (None, "wechat"):
            bench_wechat(server.port, url, wechat["id"], args, env)
        if args.only in (None, "pos"):
            bench_pos(server.port, pos["id"], args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pushes", type=int, default=20000)
    parser.add_argument("--clients", type=int, default=48)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--pos-batches", type=int, default=200)
    parser.add_argument("--pos-txns", type=int, default=100)
    parser.add_argument("--pos-lines", type=int, default=5)
    parser.add_argument("--postgres", help="URL of an empty PostgreSQL database to bench too")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--only", choices=("wechat", "pos"))
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="cdp-connectors-bench-"))
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
