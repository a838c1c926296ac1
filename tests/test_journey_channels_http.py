"""SMS (Aliyun-style SendSms) and signed webhook adapters against local stubs: the exact
requests, their signatures, and how each provider answer is classified."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from urllib.parse import urlsplit

import pytest
from werkzeug import Response

from cdp.actors import SYSTEM
from cdp.sources import create_source
from journeys.channels import Outbound, PermanentError, RateLimited, TransientError, get_channel
from journeys.channels.sms import sign
from tests.test_journey_channels import APP_ID, KEY, PHONE, json_response, person


@pytest.fixture
def people(app_ctx):
    return create_source(SYSTEM, "患者服务", "http")[0]


@pytest.fixture
def patient(people):
    return person(people, "p1", phone=PHONE)


# --- SMS -------------------------------------------------------------------------------------

SMS_TEXT = "【康护】王女士，您的阿托伐他汀预计5天后用完，可到附近药房续购。回T退订"


class SmsStub:
    def __init__(self, server):
        self.calls: list[dict] = []
        self.replies: list = []
        server.expect_request("/", method="POST").respond_with_handler(self.handle)

    def handle(self, request):
        self.calls.append(dict(request.form))
        reply = self.replies.pop(0) if self.replies else None
        if callable(reply):
            return reply(request)
        if reply is None:
            reply = {
                "Code": "OK",
                "Message": "OK",
                "BizId": "900619746936498440^0",
                "RequestId": "R1",
            }
        status = reply.pop("_status", 200) if isinstance(reply, dict) else 200
        return json_response(reply, status)


@pytest.fixture
def sms_stub(app_ctx, httpserver):
    app_ctx.config.update(
        SMS_BASE_URL=httpserver.url_for("/"),
        SMS_ACCESS_KEY_ID="LTAI_test_key",
        SMS_ACCESS_KEY_SECRET="test-secret",
        SMS_SIGN_NAME="康护",
        SMS_TEMPLATE_CODE="SMS_123456",
    )
    return SmsStub(httpserver)


def sms_out(profile_id: int, text: str = SMS_TEXT) -> Outbound:
    return Outbound(KEY, profile_id, "sms", "sms", {"text": text})


def test_aliyun_signature_matches_the_documented_example():
    """Aliyun's RPC signature doc: DescribeRegions with secret "testsecret" (GET)."""
    params = {
        "AccessKeyId": "testid",
        "Action": "DescribeRegions",
        "Format": "XML",
        "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
        "SignatureVersion": "1.0",
        "Timestamp": "2016-02-23T12:46:24Z",
        "Version": "2014-05-26",
    }
    assert sign(params, "testsecret", "GET") == "OLeaidS1JvxuMvnyHOwuJ+uX5qY="


def test_sms_wire_format_and_signature(sms_stub, patient):
    channel = get_channel("sms")
    assert channel.idempotent is False
    sent = channel.send(sms_out(patient))
    assert (sent.provider_id, sent.account) == ("900619746936498440^0", "LTAI_test_key")
    assert sent.response["Code"] == "OK"
    [form] = sms_stub.calls
    assert form["Action"] == "SendSms" and form["Version"] == "2017-05-25"
    assert form["PhoneNumbers"] == PHONE  # mainland numbers without +86
    assert form["SignName"] == "康护"
    assert form["TemplateCode"] == "SMS_123456"
    assert json.loads(form["TemplateParam"]) == {"content": SMS_TEXT.removeprefix("【康护】")}
    assert form["OutId"] == KEY
    assert form["AccessKeyId"] == "LTAI_test_key" and "test-secret" not in json.dumps(form)
    assert form["SignatureMethod"] == "HMAC-SHA1" and form["SignatureVersion"] == "1.0"
    signature = form.pop("Signature")
    assert signature == sign(form, "test-secret")
    assert signature != sign(form, "another-secret")


def test_sms_text_signature_wins_over_the_configured_one(sms_stub, patient):
    get_channel("sms").send(sms_out(patient, "您的处方已可续配。【康护药房】"))
    assert sms_stub.calls[0]["SignName"] == "康护药房"
    assert json.loads(sms_stub.calls[0]["TemplateParam"]) == {"content": "您的处方已可续配。"}


@pytest.mark.parametrize(
    ("reply", "error", "reason", "unreachable"),
    [
        ({"Code": "isv.MOBILE_NUMBER_ILLEGAL"}, PermanentError, "invalid_recipient", True),
        ({"Code": "isv.BUSINESS_LIMIT_CONTROL"}, RateLimited, "provider_rate_limited", None),
        ({"Code": "isv.SMS_TEMPLATE_ILLEGAL"}, PermanentError, "invalid_template", False),
        (
            {"Code": "isp.SYSTEM_ERROR", "_status": 500},
            TransientError,
            "provider_unavailable",
            None,
        ),
        (
            {"Code": "SignatureDoesNotMatch", "_status": 400},
            PermanentError,
            "provider_credentials",
            False,
        ),
        (
            lambda r: Response("<html>busy</html>", status=503),
            TransientError,
            "provider_unavailable",
            None,
        ),
    ],
)
def test_sms_error_mapping(sms_stub, patient, reply, error, reason, unreachable):
    sms_stub.replies.append(reply)
    with pytest.raises(error) as caught:
        get_channel("sms").send(sms_out(patient))
    assert caught.value.reason == reason
    if unreachable is not None:
        assert caught.value.unreachable is unreachable
    if error is RateLimited:
        assert caught.value.retry_after == 60


def test_sms_without_phone_or_configuration_is_refused(sms_stub, people, app_ctx):
    nobody = person(people, "p6", ids=[("wechat_openid", APP_ID, "oQ")])
    with pytest.raises(PermanentError) as caught:
        get_channel("sms").send(sms_out(nobody))
    assert (caught.value.reason, caught.value.unreachable) == ("no_recipient", True)
    someone = person(people, "p7", phone="13800138007")
    app_ctx.config["SMS_ACCESS_KEY_SECRET"] = ""
    with pytest.raises(PermanentError) as caught:
        get_channel("sms").send(sms_out(someone))
    assert (caught.value.reason, caught.value.unreachable) == ("not_configured", False)
    assert sms_stub.calls == []


# --- Webhook ---------------------------------------------------------------------------------

HOOK_SECRET = "whsec-carepath-test"


@pytest.fixture
def hook(app_ctx, httpserver):
    app_ctx.config.update(
        JOURNEY_WEBHOOK_SECRET=HOOK_SECRET, JOURNEY_WEBHOOK_ALLOWED_HOSTS=("localhost",)
    )
    received: list = []
    replies: list = []

    def handle(request):
        received.append(request)
        reply = replies.pop(0) if replies else (200, {"id": "evt_1"}, {})
        if callable(reply):
            return reply(request)
        status, body, headers = reply
        return json_response(body, status, headers)

    httpserver.expect_request("/hook", method="POST").respond_with_handler(handle)
    return httpserver.url_for("/hook"), received, replies


def hook_out(url: str, profile_id: int = 1) -> Outbound:
    payload = {"event": "refill_due", "drug": "H20041126"}
    return Outbound(KEY, profile_id, "webhook", "webhook", {"url": None, "payload": payload}, url)


def test_webhook_wire_format_and_signature(hook, patient):
    url, received, _ = hook
    channel = get_channel("webhook")
    assert channel.idempotent is True
    sent = channel.send(hook_out(url, patient))
    assert sent.provider_id == "evt_1" and sent.account == urlsplit(url).netloc
    [request] = received
    body = request.get_data()
    assert json.loads(body) == {
        "key": KEY,
        "profile_id": patient,
        "payload": {"event": "refill_due", "drug": "H20041126"},
    }
    assert request.headers["Idempotency-Key"] == KEY
    assert request.headers["Content-Type"] == "application/json"
    timestamp = request.headers["X-CarePath-Timestamp"]
    assert abs(int(timestamp) - time.time()) < 60
    expected = hmac.new(
        HOOK_SECRET.encode(), timestamp.encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(request.headers["X-CarePath-Signature"], expected)


@pytest.mark.parametrize(
    ("reply", "error", "reason"),
    [
        ((429, {}, {"Retry-After": "7"}), RateLimited, "provider_rate_limited"),
        ((503, {}, {}), TransientError, "provider_unavailable"),
        ((400, {"error": "bad"}, {}), PermanentError, "provider_rejected"),
        ((302, {}, {"Location": "https://elsewhere.example"}), PermanentError, "provider_rejected"),
    ],
)
def test_webhook_status_mapping(hook, reply, error, reason):
    url, received, replies = hook
    replies.append(reply)
    with pytest.raises(error) as caught:
        get_channel("webhook").send(hook_out(url))
    assert caught.value.reason == reason
    if error is RateLimited:
        assert caught.value.retry_after == 7
    if error is PermanentError:
        assert caught.value.unreachable is False
    assert len(received) == 1


def test_webhook_refuses_plain_http_to_unlisted_hosts_and_times_out(hook, app_ctx):
    url, received, replies = hook
    with pytest.raises(PermanentError) as caught:
        get_channel("webhook").send(hook_out(url.replace("localhost", "127.0.0.1")))
    assert caught.value.reason == "url_not_allowed" and received == []
    app_ctx.config["JOURNEY_CHANNEL_TIMEOUT"] = 0.3
    replies.append(lambda request: (time.sleep(0.8), json_response({}))[1])
    with pytest.raises(TransientError) as caught:
        get_channel("webhook").send(hook_out(url))
    assert caught.value.reason == "timeout" and caught.value.uncertain is True
