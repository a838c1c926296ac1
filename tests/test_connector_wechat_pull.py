"""WeChat follower sync against a local stub of the WeChat API (pytest-httpserver) that pages
followers and injects expired tokens, rate limits, 5xx and timeouts."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa
from werkzeug import Response

from cdp.actors import SYSTEM, Actor
from cdp.db import db, utcnow
from cdp.exceptions import PermissionDenied
from cdp.models import Identity, JobRun, Profile
from cdp.sources import create_source
from connectors import wechat_api, wechat_pull
from connectors.models import ConnectorCursor, ConnectorToken
from connectors.wechat_api import WechatClient

APP_ID = "wx0123456789abcdef"


class Stub:
    """The WeChat API: followers o00..o11, unionid for even ones; scripted failures."""

    def __init__(self, followers=12, page=5):
        self.openids = [f"o{n:02d}" for n in range(followers)]
        self.page = page
        self.tokens_issued: list[str] = []
        self.token_bodies: list[dict] = []
        self.valid: set[str] = set()
        self.fail: dict[str, list] = {"list": [], "info": [], "token": []}
        self.calls: dict[str, list] = {"list": [], "info": []}
        self.same_token_next = False

    def install(self, server):
        # Looked up per request, so a test can swap a handler for a flaky one.
        routes = (
            ("/cgi-bin/stable_token", "POST", "token"),
            ("/cgi-bin/user/get", "GET", "list"),
            ("/cgi-bin/user/info/batchget", "POST", "info"),
        )
        for path, method, name in routes:
            server.expect_request(path, method=method).respond_with_handler(
                lambda request, name=name: getattr(self, name)(request)
            )

    @staticmethod
    def json(body, status=200):
        return Response(json.dumps(body), status=status, content_type="application/json")

    def _injected(self, name):
        if not self.fail[name]:
            return None
        what = self.fail[name].pop(0)
        if what == "timeout":
            time.sleep(0.5)
            return self.json({"errcode": -1})
        if what == 500:
            return Response("oops", status=502)
        return self.json({"errcode": what, "errmsg": "injected"})

    def token(self, request):
        injected = self._injected("token")
        if injected:
            return injected
        body = request.get_json()
        self.token_bodies.append(body)
        if self.same_token_next and self.tokens_issued and not body.get("force_refresh"):
            self.same_token_next = False
            return self.json({"access_token": self.tokens_issued[-1], "expires_in": 7200})
        token = f"TOKEN{len(self.tokens_issued)}"
        self.tokens_issued.append(token)
        self.valid = {token}
        return self.json({"access_token": token, "expires_in": 7200})

    def _authorised(self, request):
        return request.args.get("access_token") in self.valid

    def list(self, request):
        self.calls["list"].append(request.args.get("next_openid", ""))
        injected = self._injected("list")
        if injected:
            return injected
        if not self._authorised(request):
            return self.json({"errcode": 40001, "errmsg": "invalid credential"})
        start = request.args.get("next_openid", "")
        begin = self.openids.index(start) + 1 if start else 0
        chunk = self.openids[begin : begin + self.page]
        body = {"total": len(self.openids), "count": len(chunk)}
        if chunk:
            body["data"] = {"openid": chunk}
            body["next_openid"] = chunk[-1]
        return self.json(body)

    def info(self, request):
        openids = [u["openid"] for u in request.get_json()["user_list"]]
        self.calls["info"].append(openids)
        injected = self._injected("info")
        if injected:
            return injected
        if not self._authorised(request):
            return self.json({"errcode": 42001, "errmsg": "access_token expired"})
        users = []
        for openid in openids:
            n = int(openid[1:])
            user = {"subscribe": 1, "openid": openid, "subscribe_time": 1700000000 + n}
            user.update(language="zh_CN", subscribe_scene="ADD_SCENE_QR_CODE", tagid_list=[2])
            if n % 2 == 0:
                user["unionid"] = f"u{n:02d}"
            if n == 11:
                user = {"subscribe": 0, "openid": openid}
            users.append(user)
        return self.json({"user_info_list": users})


@pytest.fixture
def stub(httpserver, monkeypatch):
    stub = Stub()
    stub.install(httpserver)
    monkeypatch.setattr(wechat_pull, "PAGE_SIZE", 5)
    monkeypatch.setattr(wechat_pull, "INFO_BATCH", 2)

    def client(*args, **kwargs):
        kwargs.update(sleep=lambda seconds: None, timeout=0.25, rate_per_second=0)
        return WechatClient(*args, **kwargs)

    monkeypatch.setattr(wechat_pull, "client_factory", client)
    wechat_api.forget_tokens()
    yield stub
    wechat_api.forget_tokens()


@pytest.fixture
def source_id(app, httpserver) -> str:
    options = {
        "app_id": APP_ID,
        "token": "tok123",
        "app_secret": "secret",
        "api_base": httpserver.url_for("").rstrip("/"),
    }
    with app.app_context():
        source, _ = create_source(SYSTEM, "OA", "wechat", options)
        return source.id


def run(app, source_id) -> tuple[dict, JobRun]:
    with app.app_context():
        job = wechat_pull.start_follower_sync(SYSTEM, source_id)
        result = wechat_pull.sync_followers(source_id, job.id)
        return result, db.session.get(JobRun, job.id)


def synced_openids(app) -> set[str]:
    with app.app_context():
        rows = db.session.scalars(sa.select(Identity).where(Identity.type == "wechat_openid"))
        return {r.value_index for r in rows}


def test_full_sync_pages_batches_links_unionids_and_reuses_one_token(app, stub, source_id):
    result, job = run(app, source_id)
    assert result == {"status": "done", "followers": 12}
    assert job.status == "succeeded" and job.progress == 12 and job.total == 12
    assert synced_openids(app) == set(stub.openids)
    assert stub.calls["list"] == ["", "o04", "o09"]
    assert all(len(batch) <= 2 for batch in stub.calls["info"])
    assert len(stub.tokens_issued) == 1  # one token for ~10 calls: cached, not per call
    with app.app_context():
        unionids = db.session.scalar(
            sa.select(sa.func.count()).where(Identity.type == "wechat_unionid")
        )
        assert unionids == 6
        cursor = db.session.get(ConnectorCursor, (source_id, "followers"))
        assert cursor.status == "idle" and cursor.runs == 1
        assert cursor.position["last_total"] == 12 and cursor.position["page_openid"] == ""
        row = db.session.get(ConnectorToken, (APP_ID, "access_token"))
        assert row.token_encrypted and b"TOKEN0" not in row.token_encrypted  # encrypted
        profiles = list(
            db.session.scalars(sa.select(Profile).where(Profile.merged_into_id.is_(None)))
        )
        traits = [p.traits for p in profiles]
    assert sum(1 for t in traits if t.get("wechat_subscribed") is False) == 1
    assert any(t.get("wechat_subscribe_scene") == "ADD_SCENE_QR_CODE" for t in traits)
    # A second pass finds nothing new to store (same dedupe keys) and fetches no new token.
    result, _ = run(app, source_id)
    assert result["followers"] == 12 and len(stub.tokens_issued) == 1


def test_recovers_from_expired_tokens_rate_limit_5xx_and_timeouts(app, stub, source_id):
    stub.fail["info"] = [500, "timeout", 45009, -1]
    stub.fail["list"] = [42001]
    result, job = run(app, source_id)
    assert result["status"] == "done" and job.status == "succeeded"
    assert synced_openids(app) == set(stub.openids)
    # Expire the token behind our back: the next call gets 40001, refreshes once and goes on.
    stub.valid = set()
    stub.calls = {"list": [], "info": []}
    result, _ = run(app, source_id)
    assert result["status"] == "done"
    assert len(stub.tokens_issued) == 3  # first, after 42001, after the revocation


def test_stale_token_is_refreshed_before_it_expires(app, stub, source_id):
    run(app, source_id)
    with app.app_context():
        row = db.session.get(ConnectorToken, (APP_ID, "access_token"))
        row.expires_at = utcnow() + timedelta(seconds=120)  # inside the refresh margin
        db.session.commit()
    wechat_api.forget_tokens()
    run(app, source_id)
    assert len(stub.tokens_issued) == 2


def test_same_token_after_40001_triggers_a_limited_force_refresh(app, stub, source_id):
    run(app, source_id)
    stub.valid = set()
    stub.same_token_next = True
    result, _ = run(app, source_id)
    assert result["status"] == "done"
    assert stub.token_bodies[-1]["force_refresh"] is True
    with app.app_context():
        row = db.session.get(ConnectorToken, (APP_ID, "access_token"))
        assert row.forced_today == 1 and row.forced_at is not None


def test_failure_keeps_the_cursor_and_the_next_run_resumes_there(app, stub, source_id):
    calls = {"n": 0}
    original = stub.info

    def flaky(request):
        calls["n"] += 1
        if calls["n"] > 2:  # two batches work, then 5xx for good
            return Response("down", status=503)
        return original(request)

    stub.info = flaky
    result, job = run(app, source_id)
    assert result["status"] == "failed" and job.status == "failed"
    assert "resumes from the cursor" in job.message
    with app.app_context():
        cursor = db.session.get(ConnectorCursor, (source_id, "followers"))
        assert cursor.status == "failed" and cursor.position["done"] == 4
        assert cursor.position["page_openid"] == "" and cursor.position["offset"] == 4
    done_before = {o for batch in stub.calls["info"][:2] for o in batch}
    stub.info = original
    stub.calls = {"list": [], "info": []}
    result, _ = run(app, source_id)
    assert result == {"status": "done", "followers": 12}
    assert stub.calls["list"][0] == ""  # resumed on the page it stopped in, at offset 4
    resumed = {o for batch in stub.calls["info"] for o in batch}
    assert not (resumed & done_before) and resumed | done_before == set(stub.openids)
    assert synced_openids(app) == set(stub.openids)


def test_persistent_rate_limit_pauses_and_resumes(app, stub, source_id):
    stub.fail["info"] = [45009] * 10
    result, job = run(app, source_id)
    assert result["status"] == "paused" and job.status == "failed"
    stub.fail["info"] = []
    result, _ = run(app, source_id)
    assert result["status"] == "done"


def test_schedule_picks_due_sources_only(app, stub, source_id):
    from cdp.models import Source
    from cdp.pii import vault

    with app.app_context():
        # A source row written by hand (as the demo seed does) without a valid configuration.
        options = {"app_id": "wx5d3c2b1a0f9e8d7c", "app_secret": "demo"}
        blob = vault().encrypt_json(options, b"src_demo_wechat")
        db.session.add(
            Source(id="src_demo_wechat", name="demo", kind="wechat", options_encrypted=blob)
        )
        db.session.commit()
        assert wechat_pull.sync_due_sources() == [source_id]
    run(app, source_id)
    with app.app_context():
        assert wechat_pull.sync_due_sources() == []  # synced just now
        cursor = db.session.get(ConnectorCursor, (source_id, "followers"))
        cursor.last_success_at = utcnow() - timedelta(hours=25)
        db.session.commit()
        assert wechat_pull.sync_due_sources() == [source_id]


def test_on_demand_sync_needs_an_admin(app, source_id):
    with app.app_context():
        with pytest.raises(PermissionDenied):
            wechat_pull.start_follower_sync(
                Actor(kind="user", user_id=1, role="marketer"), source_id
            )
