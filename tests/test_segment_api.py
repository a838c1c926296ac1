"""The Segment-compatible tracking API under /v1: endpoints, auth, bodies, limits, acks."""

from __future__ import annotations

import base64
import contextlib
import gzip
import http.client
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import tracemalloc
import uuid
import zlib
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from werkzeug.serving import make_server

from cdp.actors import SYSTEM
from cdp.db import db
from cdp.ingest.tasks import process_pending
from cdp.models import Event, Identity, InboundBatch, Profile, Source, Violation
from cdp.profiles import decrypt_profile_pii
from cdp.sources import create_source
from connectors import http_body
from tests.conftest import count, make_app
from tests.services import free_port

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@dataclass
class TrackingSource:
    id: str
    write_key: str


def new_source(app, name: str = "Web") -> TrackingSource:
    with app.app_context():
        source, key = create_source(SYSTEM, name, "http")
        return TrackingSource(source.id, key)


@pytest.fixture
def source(app) -> TrackingSource:
    return new_source(app)


def basic(write_key: str) -> dict:
    token = base64.b64encode(f"{write_key}:".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def post(client, path: str, body, key: str | None = None, headers=None, raw: bytes | None = None):
    data = raw if raw is not None else orjson.dumps(body)
    all_headers = {"Content-Type": "application/json", **(basic(key) if key else {})}
    all_headers.update(headers or {})
    return client.post(path, data=data, headers=all_headers)


def events(app, **where) -> list[Event]:
    with app.app_context():
        query = sa.select(Event).filter_by(**where).order_by(Event.id)
        rows = db.session.scalars(query).all()
        db.session.expunge_all()
        return rows


def track(event: str = "Viewed", user: str = "u1", **extra) -> dict:
    return {"type": "track", "userId": user, "event": event, **extra}


# --- endpoints ----------------------------------------------------------------------------

SINGLE_BODIES = {
    "identify": {"userId": "u1", "traits": {"plan": "gold"}},
    "track": {"userId": "u1", "event": "Order Completed", "properties": {"total": 9.5}},
    "page": {"anonymousId": "a1", "name": "Home"},
    "screen": {"anonymousId": "a1", "name": "Cart"},
    "group": {"userId": "u1", "groupId": "clinic-9", "traits": {"city": "上海"}},
    "alias": {"previousId": "a1", "userId": "u1"},
}
SHORT = {"identify": "i", "track": "t", "page": "p", "screen": "s", "group": "g", "alias": "a"}
SINGLE_PATHS = [(f"/v1/{call}", call) for call in SHORT] + [
    (f"/v1/{short}", call) for call, short in SHORT.items()
]


@pytest.mark.parametrize(("path", "call"), SINGLE_PATHS)
def test_each_single_call_endpoint_stores_the_event_typed_by_its_path(
    app, client, source, path, call
):
    message_id = f"m-{uuid.uuid4()}"
    response = post(
        client, path, {**SINGLE_BODIES[call], "messageId": message_id}, source.write_key
    )
    assert response.status_code == 200, response.json
    assert response.json == {
        "success": True,
        "accepted": 1,
        "duplicates": 0,
        "flagged": 0,
        "rejected": [],
    }
    stored = events(app, message_id=message_id)
    assert [(e.type, e.source_id) for e in stored] == [(call, source.id)]


@pytest.mark.parametrize("path", ["/v1/batch", "/v1/b", "/v1/import"])
def test_batch_endpoints_store_every_event(app, client, source, path):
    batch = [
        {"type": "identify", "userId": "u1", "traits": {"plan": "gold"}},
        track("A"),
        {"type": "page", "userId": "u1", "name": "Home"},
    ]
    response = post(client, path, {"batch": batch}, source.write_key)
    assert response.status_code == 200
    assert response.json["accepted"] == 3
    assert [e.type for e in events(app)] == ["identify", "track", "page"]


def test_type_in_the_body_is_kept_on_a_single_call(app, client, source):
    response = post(client, "/v1/t", {"type": "page", "userId": "u", "name": "x"}, source.write_key)
    assert response.status_code == 200
    assert [e.type for e in events(app)] == ["page"]


def test_routes_match_the_endpoint_urls_of_the_source_kind(app):
    from connectors.segment_api import HttpSourceKind

    rules = {rule.rule for rule in app.url_map.iter_rules()}
    with app.app_context():
        urls = HttpSourceKind().endpoint_urls("http://h", None)
    assert urls and all(url.removeprefix("http://h") in rules for url in urls.values())


# --- authentication -----------------------------------------------------------------------


def test_missing_unknown_or_disabled_write_key_is_401_json(app, client, source):
    body = {"batch": [track()]}
    wrong = "wk_" + "x" * 43
    attempts = [
        post(client, "/v1/batch", body),
        post(client, "/v1/batch", body, wrong),
        post(client, "/v1/batch", {**body, "writeKey": wrong}),
        post(client, "/v1/track", track(), headers={"Authorization": "Bearer " + source.write_key}),
    ]
    with app.app_context():
        db.session.get(Source, source.id).enabled = False
        db.session.commit()
    attempts.append(post(client, "/v1/batch", body, source.write_key))
    for response in attempts:
        assert response.status_code == 401
        assert response.json["code"] == 401
        assert response.json["message"]
        assert response.headers["WWW-Authenticate"] == 'Basic realm="cdp"'
    assert events(app) == []


def test_write_key_in_a_text_plain_body_works_like_analytics_js_beacons(app, client, source):
    message = {**track("Beacon"), "writeKey": source.write_key, "messageId": "b-1"}
    response = client.post(
        "/v1/t", data=json.dumps(message), headers={"Content-Type": "text/plain;charset=UTF-8"}
    )
    assert response.status_code == 200
    response = post(client, "/v1/batch", {"batch": [track("B2")], "writeKey": source.write_key})
    assert response.status_code == 200
    assert [e.name for e in events(app)] == ["Beacon", "B2"]
    with app.app_context():
        blob = repr([(e.properties, e.context) for e in db.session.scalars(sa.select(Event))])
    assert source.write_key not in blob


def test_write_key_as_basic_password_with_an_empty_user_name_is_accepted(app, client, source):
    token = base64.b64encode(f":{source.write_key}".encode()).decode()
    response = post(client, "/v1/track", track(), headers={"Authorization": f"Basic {token}"})
    assert response.status_code == 200


def test_the_write_key_is_never_logged(app, client, source, caplog):
    caplog.set_level("DEBUG")
    post(client, "/v1/track", track(), source.write_key)
    post(client, "/v1/track", track(), source.write_key[:-2] + "zz")
    assert source.write_key[8:] not in caplog.text


def test_no_cookie_no_csrf_and_cors_for_browsers(app, client, source):
    response = post(client, "/v1/track", track(), source.write_key)
    assert response.status_code == 200  # no CSRF token was sent
    assert "Set-Cookie" not in response.headers
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    preflight = client.options(
        "/v1/batch",
        headers={
            "Origin": "https://shop.example.cn",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert preflight.status_code == 200
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    assert "Set-Cookie" not in preflight.headers


# --- bodies and limits --------------------------------------------------------------------


def test_gzip_and_deflate_bodies_are_accepted(app, client, source):
    batch = {"batch": [track(f"e{i}") for i in range(50)]}
    response = post(
        client,
        "/v1/batch",
        None,
        source.write_key,
        headers={"Content-Encoding": "gzip"},
        raw=gzip.compress(orjson.dumps(batch)),
    )
    assert response.status_code == 200 and response.json["accepted"] == 50
    response = post(
        client,
        "/v1/track",
        None,
        source.write_key,
        headers={"Content-Encoding": "deflate"},
        raw=zlib.compress(orjson.dumps(track("deflated"))),
    )
    assert response.status_code == 200
    assert len(events(app)) == 51


def _gzip_bomb(size: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = b"\0" * (1 << 20)
    parts = [packer.compress(zeros) for _ in range(size >> 20)]
    return b"".join(parts) + packer.flush()


def test_gzip_bomb_is_refused_without_inflating_it(app, client, source):
    bomb = _gzip_bomb(50 << 20)
    assert len(bomb) < 100_000
    tracemalloc.start()
    try:
        response = post(
            client,
            "/v1/batch",
            None,
            source.write_key,
            headers={"Content-Encoding": "gzip"},
            raw=bomb,
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 413
    assert "500 KB" in response.json["message"]
    assert peak < 8 << 20  # never anywhere near the 50 MB it would inflate to
    assert events(app) == [] and count(app, Violation) == 0


def test_oversized_batch_is_413_before_anything_is_stored(app, client, source):
    batch = {"batch": [track(properties={"pad": "x" * 1000}) for _ in range(600)]}
    response = post(client, "/v1/batch", batch, source.write_key)
    assert response.status_code == 413
    assert "500 KB" in response.json["message"]
    # Also when it only gets too large once inflated.
    response = post(
        client,
        "/v1/batch",
        None,
        source.write_key,
        headers={"Content-Encoding": "gzip"},
        raw=gzip.compress(orjson.dumps(batch)),
    )
    assert response.status_code == 413
    assert events(app) == []


def test_single_event_over_32_kb_is_413(app, client, source):
    response = post(client, "/v1/track", track(properties={"pad": "x" * 33_000}), source.write_key)
    assert response.status_code == 413
    assert "32 KB" in response.json["message"]
    assert events(app) == []


def test_more_than_2500_events_is_400(app, client, source):
    response = post(client, "/v1/batch", {"batch": [{"type": "track"}] * 2501}, source.write_key)
    assert response.status_code == 400
    assert "2500" in response.json["message"]
    assert "batch" in response.json["errors"]
    assert count(app, Violation) == 0
    response = post(client, "/v1/batch", {"batch": {"type": "track"}}, source.write_key)
    assert response.status_code == 400
    assert response.json["errors"] == {"batch": ["batch must be a JSON array of events"]}


@pytest.mark.parametrize(
    ("raw", "headers", "status", "words"),
    [
        (b'{"batch": [', {}, 400, "not valid JSON"),
        (b"", {}, 400, "empty"),
        (b"[1, 2]", {}, 400, "JSON object"),
        (b'{"batch": {"type": "track"}}', {}, 400, "batch"),
        (b'{"userId": "u"}', {"Content-Encoding": "gzip"}, 400, "not valid gzip"),
        # mtime=0 keeps the bytes (and so the test id) the same on every xdist worker.
        (
            gzip.compress(b'{"batch": []}', mtime=0)[:-6],
            {"Content-Encoding": "gzip"},
            400,
            "truncated",
        ),
        (b'{"batch": []}', {"Content-Encoding": "br"}, 415, "Content-Encoding"),
    ],
    ids=[
        "bad-json",
        "empty",
        "not-object",
        "batch-not-list",
        "bad-gzip",
        "truncated-gzip",
        "brotli",
    ],
)
def test_malformed_bodies_are_4xx_naming_the_problem(
    app, client, source, raw, headers, status, words
):
    response = post(client, "/v1/batch", None, source.write_key, headers=headers, raw=raw)
    assert response.status_code == status
    assert words in response.json["message"]


def test_decompress_handles_zlib_raw_deflate_and_concatenated_gzip():
    data = b'{"a": 1}'
    raw_deflate = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    raw = raw_deflate.compress(data) + raw_deflate.flush()
    assert http_body.decompress(zlib.compress(data), "deflate", 100) == data
    assert http_body.decompress(raw, "deflate", 100) == data
    assert http_body.decompress(gzip.compress(data) * 2, "gzip", 100) == data * 2
    with pytest.raises(http_body.RequestEntityTooLarge):
        http_body.decompress(gzip.compress(data) * 2, "gzip", 10)


# --- results ------------------------------------------------------------------------------


def test_partial_batch_stores_the_valid_events_and_reports_each_rejected_one(app, client, source):
    batch = [
        track("Ok 1"),
        {"type": "track", "userId": "u1"},
        {"type": "teleport", "userId": "u1"},
        track("Ok 2"),
        "not an event",
    ]
    response = post(client, "/v1/batch", {"batch": batch}, source.write_key)
    assert response.status_code == 200
    assert response.json["success"] is True and response.json["accepted"] == 2
    assert [(r["index"], r["field"]) for r in response.json["rejected"]] == [
        (1, "event"),
        (2, "type"),
        (4, "(message)"),
    ]
    assert all(r["reason"] for r in response.json["rejected"])
    assert [e.name for e in events(app)] == ["Ok 1", "Ok 2"]
    with app.app_context():
        stored = db.session.scalars(sa.select(Violation).order_by(Violation.batch_index)).all()
        assert [(v.batch_index, v.field, v.rejected) for v in stored] == [
            (1, "event", True),
            (2, "type", True),
            (4, "(message)", True),
        ]
        assert {v.source_id for v in stored} == {source.id}


def test_batch_where_every_event_is_rejected_is_400_with_the_same_shape(app, client, source):
    response = post(
        client, "/v1/batch", {"batch": [{"type": "track"}, {"type": "nope"}]}, source.write_key
    )
    assert response.status_code == 400
    body = response.json
    assert body["success"] is False and body["code"] == 400 and "rejected" in body["message"]
    assert (body["accepted"], body["duplicates"], body["flagged"]) == (0, 0, 0)
    assert [r["index"] for r in body["rejected"]] == [0, 1]
    assert count(app, Violation) == 2
    response = post(client, "/v1/track", {"userId": "u"}, source.write_key)
    assert response.status_code == 400 and response.json["rejected"][0]["field"] == "event"


def test_the_same_batch_posted_twice_is_acked_twice_and_stored_once(app, client, source):
    batch = {"batch": [track(f"e{i}", messageId=f"dup-{i}") for i in range(20)]}
    first = post(client, "/v1/batch", batch, source.write_key)
    second = post(client, "/v1/batch", batch, source.write_key)
    assert first.status_code == second.status_code == 200
    assert (first.json["accepted"], first.json["duplicates"]) == (20, 0)
    assert (second.json["accepted"], second.json["duplicates"]) == (0, 20)
    assert second.json["success"] is True
    assert len(events(app)) == 20


def test_top_level_batch_context_integrations_and_sent_at_apply_to_every_message(
    app, client, source
):
    body = {
        "batch": [
            track("Inherits", user="doc-1"),
            track(
                "Overrides",
                user="pat-1",
                context={"profileKind": "patient", "app": {"version": "2"}},
            ),
        ],
        "context": {"profileKind": "hcp", "app": {"name": "HCP Portal", "version": "1"}},
        "integrations": {"All": False},
        # The device clock is years off: events are placed relative to when we received them.
        "sentAt": "2020-01-01T00:01:00Z",
    }
    body["batch"][0]["timestamp"] = "2020-01-01T00:00:00Z"
    response = post(client, "/v1/batch", body, source.write_key)
    assert response.status_code == 200 and response.json["accepted"] == 2
    inherits, overrides = events(app)
    assert inherits.context["app"] == {"name": "HCP Portal", "version": "1"}
    assert overrides.context["app"] == {"name": "HCP Portal", "version": "2"}
    assert inherits.timestamp == inherits.received_at - timedelta(minutes=1)
    with app.app_context():
        kinds = {p.id: p.kind for p in db.session.scalars(sa.select(Profile))}
    assert kinds[inherits.profile_id] == "hcp"
    assert kinds[overrides.profile_id] == "patient"


# --- availability and rate limits ---------------------------------------------------------


def test_database_down_during_commit_is_503_retry_after_and_nothing_stored(
    app, client, source, monkeypatch
):
    def unreachable(*args, **kwargs):
        raise sa.exc.OperationalError("COMMIT", {}, Exception("server closed the connection"))

    monkeypatch.setattr(sa.orm.Session, "commit", unreachable)
    response = post(client, "/v1/batch", {"batch": [track(), track("x")]}, source.write_key)
    monkeypatch.undo()
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "2"
    assert response.json["code"] == 503 and "retry" in response.json["message"]
    assert events(app) == [] and count(app, Violation) == 0
    # The SDK retries once the database is back: the batch is then stored.
    assert post(client, "/v1/batch", {"batch": [track()]}, source.write_key).status_code == 200


def test_database_down_before_authentication_is_503_not_500(app, client, source, monkeypatch):
    def unreachable(*args, **kwargs):
        raise sa.exc.OperationalError("SELECT", {}, Exception("could not connect"))

    monkeypatch.setattr(sa.orm.Session, "execute", unreachable)
    response = post(client, "/v1/track", track(), source.write_key)
    monkeypatch.undo()
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "2"


def test_unreachable_postgresql_is_503(tmp_path):
    port = free_port()  # nothing listens there
    app = make_app(f"postgresql+psycopg://cdp@127.0.0.1:{port}/cdp")
    key = "wk_" + "a" * 43
    response = post(app.test_client(), "/v1/track", track(), key)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "2"
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def limited_app(migrated_sqlite, tmp_path):
    path = tmp_path / "limited.db"
    shutil.copy(migrated_sqlite, path)
    application = make_app(f"sqlite:///{path}", SOURCE_RATE_LIMIT="3 per minute")
    yield application
    with application.app_context():
        db.session.remove()
        db.engine.dispose()


def test_rate_limit_is_per_source_429_with_retry_after(limited_app):
    client = limited_app.test_client()
    noisy, quiet = new_source(limited_app, "Noisy"), new_source(limited_app, "Quiet")
    codes = [post(client, "/v1/track", track(), noisy.write_key).status_code for _ in range(3)]
    assert codes == [200, 200, 200]
    # The limit counts requests of the source across every endpoint.
    limited = post(client, "/v1/batch", {"batch": [track()]}, noisy.write_key)
    assert limited.status_code == 429
    assert limited.json["code"] == 429
    assert 0 < int(limited.headers["Retry-After"]) <= 60
    assert post(client, "/v1/track", track(), quiet.write_key).status_code == 200
    assert len(events(limited_app, source_id=noisy.id)) == 3


# --- the real SDK against a live server ---------------------------------------------------


@contextlib.contextmanager
def live_server(app):
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        thread.join(5)


@pytest.mark.parametrize("deferred", [False, True], ids=["resolved-in-request", "deferred"])
def test_real_segment_sdk_ends_in_one_merged_profile_without_clear_text_pii(
    app, source, tmp_path, deferred
):
    from segment import analytics

    app.config["INGEST_DEFER_RESOLUTION"] = deferred
    phone, name = "137 0021 4455", "张伟"
    errors = []
    with live_server(app) as host:
        client = analytics.Client(
            source.write_key, host=host, sync_mode=True, on_error=lambda e, b: errors.append(e)
        )
        client.identify(anonymous_id="anon-7", traits={"phone": phone, "name": name, "tier": 2})
        client.track(anonymous_id="anon-7", event="Viewed Product", properties={"sku": "A1"})
        client.track(user_id="user-7", event="Signed In")  # a second profile, for now
        client.alias(previous_id="anon-7", user_id="user-7")
        client.flush()
        # The batching (background) mode, gzipped, ends up in the same place.
        batching = analytics.Client(
            source.write_key, host=host, gzip=True, on_error=lambda e, b: errors.append(e)
        )
        batching.track(user_id="user-7", event="Order Completed", properties={"total": 88})
        batching.flush()
        batching.join()
    assert errors == []
    if deferred:  # acked means committed, still encrypted, until the drain job resolves it
        assert_no_clear_text_pii(tmp_path, phone, name)
        with app.app_context():
            assert db.session.scalar(sa.select(sa.func.count(InboundBatch.id))) == 5
            process_pending()
            assert db.session.scalar(sa.select(sa.func.count(InboundBatch.id))) == 0
            db.session.remove()
    stored = events(app, source_id=source.id)
    assert [e.type for e in stored] == ["identify", "track", "track", "alias", "track"]
    with app.app_context():
        live = db.session.scalars(sa.select(Profile).where(Profile.merged_into_id.is_(None))).all()
        assert len(live) == 1
        assert live[0].traits == {"tier": 2}
        assert decrypt_profile_pii(live[0].pii_encrypted) == {"phone": phone, "name": name}
        kinds = db.session.scalars(
            sa.select(Identity.type).where(Identity.profile_id == live[0].id)
        )
        assert sorted(kinds) == ["anonymous_id", "phone", "user_id"]
        db.session.remove()
        db.engine.dispose()
    assert {e.profile_id for e in stored} == {live[0].id}
    assert_no_clear_text_pii(tmp_path, phone, name)


def assert_no_clear_text_pii(folder, phone: str, name: str) -> None:
    files = list(folder.glob("cdp.db*"))
    assert files
    blob = b"".join(path.read_bytes() for path in files)
    for secret in (phone.replace(" ", ""), phone, name):
        assert secret.encode() not in blob


# --- ack means committed: kill -9 the server right after acks ------------------------------


class Gunicorn:
    def __init__(self, env: dict, port: int, log: Path):
        self.env, self.port, self.log = env, port, log
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [str(BIN / "gunicorn"), "-w", "2", "-b", f"127.0.0.1:{self.port}", "cdp:create_app()"],
            cwd=REPO,
            env=self.env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            with contextlib.suppress(OSError):
                status, _ = request_json(self.port, "GET", "/healthz")
                if status == 200:
                    return
            time.sleep(0.1)
        raise AssertionError("gunicorn did not start:\n" + self.log.read_text())

    def kill(self, sig=signal.SIGKILL) -> None:
        if self.process and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            self.process.wait(10)


def request_json(port: int, method: str, path: str, body=None, key: str | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Content-Type": "application/json", **(basic(key) if key else {})}
        conn.request(method, path, body=orjson.dumps(body) if body else None, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.mark.slow
def test_acked_events_survive_kill_9_of_the_server_processes(tmp_path):
    database = tmp_path / "cdp.db"
    env = {
        **os.environ,
        "CDP_DATABASE_URL": f"sqlite:///{database}",
        "CDP_INSTANCE_PATH": str(tmp_path / "instance"),
    }
    subprocess.run([str(BIN / "cdp"), "db", "upgrade"], env=env, cwd=REPO, check=True)
    created = subprocess.run(
        [str(BIN / "cdp"), "sources", "create", "--name", "x", "--kind", "http", "--json"],
        env=env,
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    key = json.loads(created.stdout.decode().strip().splitlines()[-1])["write_key"]
    server = Gunicorn(env, free_port(), tmp_path / "gunicorn.log")
    server.start()
    acked: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def sender(worker: int) -> None:
        for n in range(10_000):
            if stop.is_set():
                return
            ids = [f"w{worker}-b{n}-e{i}" for i in range(25)]
            batch = [
                track(f"e{i}", user=f"user-{worker}-{i % 7}", messageId=mid)
                for i, mid in enumerate(ids)
            ]
            try:
                status, _ = request_json(server.port, "POST", "/v1/batch", {"batch": batch}, key)
            except (OSError, http.client.HTTPException):
                return  # the server died under us (maybe mid-answer): this batch was never acked
            if status == 200:
                with lock:
                    acked.extend(ids)

    threads = [threading.Thread(target=sender, args=(w,)) for w in range(4)]
    try:
        for thread in threads:
            thread.start()
        while True:
            with lock:
                if len(acked) >= 1000:
                    break
            time.sleep(0.005)
        server.kill()  # SIGKILL, master and workers, while batches are in flight
        stop.set()
        for thread in threads:
            thread.join(30)
        with lock:
            acknowledged = list(acked)
        # gunicorn runs no worker: the acked batches wait, committed, for the drain job
        # (deferred resolution, the default); `cdp drain` does its work here.
        with contextlib.closing(sqlite3.connect(database)) as conn:
            assert conn.execute("SELECT count(*) FROM inbound_batches").fetchone()[0] > 0
        subprocess.run([str(BIN / "cdp"), "drain"], env=env, cwd=REPO, check=True)
        server.start()
        status, body = request_json(
            server.port, "POST", "/v1/batch", {"batch": [track(messageId=acknowledged[-1])]}, key
        )
        assert status == 200 and orjson.loads(body)["duplicates"] == 1
    finally:
        stop.set()
        server.kill(signal.SIGTERM)
    with contextlib.closing(sqlite3.connect(database)) as conn:
        stored = [row[0] for row in conn.execute("SELECT message_id FROM events")]
    assert len(stored) == len(set(stored)), "an event was stored twice"
    missing = set(acknowledged) - set(stored)
    assert not missing, f"{len(missing)} acked events were lost, e.g. {sorted(missing)[:3]}"
