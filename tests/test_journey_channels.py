"""WeChat channel adapters against a local WeChat API stub (template and subscribe messages:
exact requests, account choice, error mapping) and the per-account token buckets.
SMS and webhook adapters: test_journey_channels_http.py."""

from __future__ import annotations

import json
import threading
import time

import pytest
import redis
from werkzeug import Response

from cdp.actors import SYSTEM
from cdp.ingest.pipeline import ingest
from cdp.queue import tasks
from cdp.sources import create_source
from connectors import wechat_api
from journeys.channels import (
    CHANNELS,
    Outbound,
    PermanentError,
    RateLimited,
    TransientError,
    get_channel,
)
from journeys.channels.ratelimit import TokenBucket, acquire
from tests.services import free_port

APP_ID = "wx0123456789abcdef"
MINI_ID = "wxminiprogram00001"
OPENID = "oOPENID_patient_1"
MINI_OPENID = "oMINI_patient_1"
PHONE = "13800138001"
TEMPLATE = "/cgi-bin/message/template/send"
SUBSCRIBE = "/cgi-bin/message/subscribe/send"
OK = {"errcode": 0, "errmsg": "ok", "msgid": 200163836}
KEY = "i42:send_reminder:1"


def json_response(body, status=200, headers=None):
    return Response(
        json.dumps(body), status=status, headers=headers, content_type="application/json"
    )


class WechatStub:
    """The WeChat API: stable_token, template and subscribe sends; scripted send replies."""

    def __init__(self, server):
        self.sent: list[dict] = []
        self.replies: list = []
        self.tokens = 0
        server.expect_request("/cgi-bin/stable_token", method="POST").respond_with_handler(
            self.token
        )
        for path in (TEMPLATE, SUBSCRIBE):
            server.expect_request(path, method="POST").respond_with_handler(self.send)

    def token(self, request):
        self.tokens += 1
        return json_response({"access_token": f"TOKEN{self.tokens}", "expires_in": 7200})

    def send(self, request):
        self.sent.append(
            {
                "path": request.path,
                "token": request.args.get("access_token"),
                "json": json.loads(request.get_data()),
                "raw": request.get_data(),
            }
        )
        reply = self.replies.pop(0) if self.replies else OK
        return reply(request) if callable(reply) else json_response(reply)


@pytest.fixture(autouse=True)
def _fresh_tokens():
    wechat_api.forget_tokens()
    yield
    wechat_api.forget_tokens()


@pytest.fixture
def people(app_ctx):
    return create_source(SYSTEM, "患者服务", "http")[0]


def person(source, user_id: str, phone: str | None = None, ids=()) -> int:
    traits = {"phone": phone} if phone else {}
    external = [{"type": t, "id": value, "collection": app} for t, app, value in ids]
    message = {
        "type": "identify",
        "userId": user_id,
        "traits": traits,
        "context": {"externalIds": external},
    }
    return ingest(source, [message]).profile_ids[0]


@pytest.fixture
def stub(httpserver):
    return WechatStub(httpserver)


@pytest.fixture
def wechat(app_ctx, httpserver, stub):
    base = httpserver.url_for("/")
    create_source(
        SYSTEM,
        "服务号",
        "wechat",
        {"app_id": APP_ID, "token": "TOKEN", "app_secret": "s3cret", "api_base": base},
    )
    create_source(
        SYSTEM,
        "小程序",
        "miniprogram",
        {"app_id": MINI_ID, "app_secret": "s3cret", "api_base": base},
    )
    return stub


@pytest.fixture
def patient(people):
    return person(
        people,
        "p1",
        phone=PHONE,
        ids=[("wechat_openid", APP_ID, OPENID), ("miniprogram_openid", MINI_ID, MINI_OPENID)],
    )


def template_message() -> dict:
    return {
        "template_id": "TMPL_REFILL",
        "url": "https://care.example.cn/refill",
        "miniprogram": {"appid": MINI_ID, "pagepath": "pages/refill?drug=H20041126"},
        "data": {"thing1": {"value": "阿托伐他汀钙片"}, "time2": {"value": "2025-06-01"}},
    }


def template_out(profile_id: int, key: str = KEY) -> Outbound:
    return Outbound(key, profile_id, "wechat", "wechat_template", template_message())


def subscribe_out(profile_id: int) -> Outbound:
    message = {
        "template_id": "TMPL_COUPON",
        "page": "pages/coupon?id=7",
        "data": {"thing1": {"value": "续方优惠券"}},
    }
    return Outbound(KEY, profile_id, "miniprogram", "miniprogram_subscribe", message)


# --- WeChat ----------------------------------------------------------------------------------


def test_template_message_wire_format(wechat, patient):
    channel = get_channel("wechat")
    assert channel.idempotent is True and channel.idempotency_window == 600
    sent = channel.send(template_out(patient))
    assert (sent.provider_id, sent.account) == ("200163836", APP_ID)
    assert sent.response == OK
    [call] = wechat.sent
    assert call["path"] == TEMPLATE and call["token"] == "TOKEN1"
    assert call["json"] == {
        "touser": OPENID,
        "template_id": "TMPL_REFILL",
        "url": "https://care.example.cn/refill",
        "miniprogram": {"appid": MINI_ID, "pagepath": "pages/refill?drug=H20041126"},
        "data": {"thing1": {"value": "阿托伐他汀钙片"}, "time2": {"value": "2025-06-01"}},
        "client_msg_id": KEY,
    }
    assert "阿托伐他汀钙片".encode() in call["raw"]  # UTF-8 as is, not \u escapes


def test_subscribe_message_wire_format(wechat, patient):
    channel = get_channel("miniprogram")
    assert channel.idempotent is False
    sent = channel.send(subscribe_out(patient))
    assert sent.account == MINI_ID
    [call] = wechat.sent
    assert call["path"] == SUBSCRIBE
    assert call["json"] == {
        "touser": MINI_OPENID,
        "template_id": "TMPL_COUPON",
        "page": "pages/coupon?id=7",
        "data": {"thing1": {"value": "续方优惠券"}},
        "miniprogram_state": "formal",
        "lang": "zh_CN",
    }


def test_the_account_is_the_source_of_the_openids_app(wechat, people):
    """An openid in an app we have no source for is skipped; the one we can send with is used."""
    both = person(
        people, "p2", ids=[("wechat_openid", APP_ID, OPENID), ("wechat_openid", "wxother", "oX")]
    )
    get_channel("wechat").send(template_out(both))
    assert wechat.sent[0]["json"]["touser"] == OPENID
    only_other = person(people, "p3", ids=[("wechat_openid", "wxother", "oY")])
    with pytest.raises(PermanentError) as caught:
        get_channel("wechat").send(template_out(only_other))
    assert caught.value.reason == "no_account" and caught.value.unreachable is False
    nobody = person(people, "p4", phone="13800138004")
    with pytest.raises(PermanentError) as caught:
        get_channel("wechat").send(template_out(nobody))
    assert caught.value.reason == "no_recipient" and caught.value.unreachable is True
    assert len(wechat.sent) == 1


@pytest.mark.parametrize(
    ("errcode", "channel", "reason", "unreachable"),
    [
        (43004, "wechat", "unsubscribed", True),
        (40003, "wechat", "invalid_recipient", True),
        (43101, "miniprogram", "user_refused", True),
        (40037, "wechat", "invalid_template", False),
        (47003, "miniprogram", "invalid_data", False),
    ],
)
def test_wechat_permanent_errors(wechat, patient, errcode, channel, reason, unreachable):
    wechat.replies.append({"errcode": errcode, "errmsg": "injected"})
    out = template_out(patient) if channel == "wechat" else subscribe_out(patient)
    with pytest.raises(PermanentError) as caught:
        get_channel(channel).send(out)
    assert caught.value.reason == reason
    assert caught.value.unreachable is unreachable
    assert str(errcode) in caught.value.detail
    assert len(wechat.sent) == 1  # never retried


def test_wechat_busy_is_transient_and_not_retried_inside_the_adapter(wechat, patient):
    wechat.replies.append({"errcode": -1, "errmsg": "system error"})
    with pytest.raises(TransientError) as caught:
        get_channel("miniprogram").send(subscribe_out(patient))
    assert caught.value.reason == "provider_unavailable" and caught.value.uncertain is False
    wechat.replies.append(lambda request: Response("bad gateway", status=502))
    with pytest.raises(TransientError):
        get_channel("miniprogram").send(subscribe_out(patient))
    assert len(wechat.sent) == 2


def test_wechat_rate_limit_backs_off_the_whole_account(wechat, patient):
    wechat.replies.append({"errcode": 45009, "errmsg": "api freq out of limit"})
    with pytest.raises(RateLimited) as caught:
        get_channel("wechat").send(template_out(patient))
    assert caught.value.reason == "provider_rate_limited" and caught.value.retry_after == 60
    # Every sender of this app id now waits, without calling WeChat.
    with pytest.raises(RateLimited) as caught:
        get_channel("wechat").send(template_out(patient, "i43:send:1"))
    assert caught.value.reason == "throttled" and 55 < caught.value.retry_after <= 61
    assert len(wechat.sent) == 1
    # The mini-program account is another bucket.
    get_channel("miniprogram").send(subscribe_out(patient))


def test_rejected_token_is_renewed_once_and_the_send_repeated(wechat, patient):
    wechat.replies.append({"errcode": 40001, "errmsg": "invalid credential"})
    sent = get_channel("wechat").send(template_out(patient))
    assert sent.provider_id == "200163836"
    assert [c["token"] for c in wechat.sent] == ["TOKEN1", "TOKEN2"]
    assert [c["json"]["client_msg_id"] for c in wechat.sent] == [KEY, KEY]


def test_send_timeout_is_uncertain_but_no_connection_is_not(app_ctx, wechat, patient, people):
    app_ctx.config["JOURNEY_CHANNEL_TIMEOUT"] = 0.3

    def slow(request):
        time.sleep(0.8)
        return json_response(OK)

    wechat.replies.append(slow)
    with pytest.raises(TransientError) as caught:
        get_channel("miniprogram").send(subscribe_out(patient))
    assert caught.value.reason == "timeout" and caught.value.uncertain is True
    # An app whose API host refuses connections: nothing can have been sent.
    create_source(
        SYSTEM,
        "另一个服务号",
        "wechat",
        {
            "app_id": "wxdown",
            "token": "TOKEN",
            "app_secret": "s",
            "api_base": f"http://127.0.0.1:{free_port()}",
        },
    )
    other = person(people, "p5", ids=[("wechat_openid", "wxdown", "oZ")])
    with pytest.raises(TransientError) as caught:
        get_channel("wechat").send(template_out(other))
    assert caught.value.reason == "network" and caught.value.uncertain is False


def test_unknown_channel_and_registry(app_ctx):
    assert {"wechat", "miniprogram", "sms", "webhook"} <= set(CHANNELS)
    with pytest.raises(PermanentError) as caught:
        get_channel("fax")
    assert caught.value.reason == "unknown_channel"


# --- Token buckets ---------------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 1_700_000_000.0

    def __call__(self):
        return self.now


def test_bucket_allows_a_burst_then_refills_at_its_rate(app_ctx):
    clock = Clock()
    bucket = TokenBucket(tasks().connection, "t:bucket", rate=2, burst=3, clock=clock)
    assert [bucket.take() for _ in range(3)] == [0, 0, 0]
    assert bucket.take() == pytest.approx(0.5)
    clock.now += 0.5
    assert bucket.take() == 0
    assert bucket.take() == pytest.approx(0.5)
    clock.now += 10  # never more than the burst
    assert [bucket.take() for _ in range(4)][-1] == pytest.approx(0.5)


def test_rate_limits_are_per_channel_account(app_ctx):
    app_ctx.config["JOURNEY_CHANNEL_RATES"] = {"sms": (0.01, 2)}
    acquire("sms", "account-a")
    acquire("sms", "account-a")
    with pytest.raises(RateLimited) as caught:
        acquire("sms", "account-a")
    assert caught.value.reason == "throttled" and 90 < caught.value.retry_after <= 100
    acquire("sms", "account-b")  # another account has its own bucket
    acquire("wechat", "account-a")  # and so has another channel


def test_no_redis_is_a_transient_error(app_ctx, monkeypatch):
    def down(*args, **kwargs):
        raise redis.ConnectionError("down")

    monkeypatch.setattr(tasks().connection, "pipeline", down)
    with pytest.raises(TransientError) as caught:
        acquire("sms", "account-a")
    assert caught.value.reason == "rate_limiter_unavailable"


@pytest.mark.services
def test_concurrent_workers_never_exceed_the_burst(redis_url):
    """Real Redis, eight threads racing for one bucket: exactly `burst` tokens are handed out."""
    connection = redis.Redis.from_url(redis_url)
    granted = []

    def worker():
        bucket = TokenBucket(connection, "t:race", rate=0.001, burst=25)
        granted.extend(1 for _ in range(10) if bucket.take() == 0)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(granted) == 25
