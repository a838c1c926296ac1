"""SMS through an HTTP gateway speaking Aliyun's ``SendSms`` (dysmsapi, RPC style).

Request: ``POST {SMS_BASE_URL}/`` with form parameters ``Action=SendSms``,
``Version=2017-05-25``, ``PhoneNumbers`` (no "+", no 86 for mainland numbers),
``SignName``, ``TemplateCode``, ``TemplateParam`` (JSON) and ``OutId`` = the delivery
key, plus the common ``AccessKeyId``, ``Format=JSON``, ``RegionId``, ``SignatureMethod=
HMAC-SHA1``, ``SignatureVersion=1.0``, ``SignatureNonce``, ``Timestamp`` (UTC ISO 8601).
``Signature`` = base64(HMAC-SHA1(secret + "&", "POST&%2F&" + pct(canonical))), where the
canonical string is the parameters sorted by name, each name and value percent-encoded
(RFC 3986: space %20, "*" %2A, "~" kept) and joined as ``k=v&…``.

Content: a rendered SMS is a whole text (``{"text": "【康护】…回T退订"}``), while Aliyun sends
approved templates. The text goes out through one generic template (``SMS_TEMPLATE_CODE``,
whose body is ``${content}``) as ``{"content": <text without its signature>}``, and the
text's 【signature】 is the ``SignName`` (``SMS_SIGN_NAME`` when it has none). A message
that names its own ``template_code`` and ``params`` is sent as is.

Aliyun does not dedupe on ``OutId``, so the channel is not idempotent. The delivery
report (``connectors/sms_reports.py``) carries ``biz_id`` = our provider id and
``out_id`` = our key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import uuid
from datetime import UTC, datetime
from urllib.parse import quote

import orjson

from journeys.channels import http
from journeys.channels.base import (
    Channel,
    Outbound,
    PermanentError,
    RateLimited,
    Sent,
    TransientError,
    register_channel,
)
from journeys.channels.ratelimit import acquire, slow_down
from journeys.channels.recipients import phone_of

DEFAULT_BASE_URL = "https://dysmsapi.aliyuncs.com"
API_VERSION = "2017-05-25"
DEFAULT_TEMPLATE_CODE = "SMS_CAREPATH_TEXT"
DEFAULT_REGION = "cn-hangzhou"
_SIGNATURE = re.compile(r"^\s*【([^【】\s]{2,16})】|【([^【】\s]{2,16})】\s*$")

# Aliyun error codes (Code of the answer) → how to treat them.
UNREACHABLE = {
    "isv.MOBILE_NUMBER_ILLEGAL": "invalid_recipient",
    "isv.MOBILE_COUNT_OVER_LIMIT": "invalid_recipient",
}
# Aliyun's per-number flow control (a few messages a minute / hour to one phone): retry later.
RECIPIENT_LIMITED = {"isv.BUSINESS_LIMIT_CONTROL"}
# The account's API rate: every sender of the account backs off.
ACCOUNT_LIMITED = {"Throttling", "Throttling.User", "Throttling.Api"}
TRANSIENT = {
    "isp.SYSTEM_ERROR",
    "isp.GATEWAY_ERROR",
    "ServiceUnavailable",
    "InternalError",
    "SignatureNonceUsed",
    "InvalidTimeStamp.Expired",
}
PERMANENT = {
    "isv.SMS_TEMPLATE_ILLEGAL": "invalid_template",
    "isv.TEMPLATE_MISSING_PARAMETERS": "invalid_template",
    "isv.TEMPLATE_PARAMS_ILLEGAL": "invalid_template",
    "isv.PARAM_LENGTH_LIMIT": "invalid_template",
    "isv.SMS_SIGNATURE_ILLEGAL": "invalid_signature",
    "isv.BLACK_KEY_CONTROL_LIMIT": "content_refused",
    "isv.DAY_LIMIT_CONTROL": "recipient_daily_limit",
    "isv.AMOUNT_NOT_ENOUGH": "provider_account",
    "isv.OUT_OF_SERVICE": "provider_account",
    "isv.ACCOUNT_ABNORMAL": "provider_account",
    "isv.ACCOUNT_NOT_EXISTS": "provider_account",
    "SignatureDoesNotMatch": "provider_credentials",
    "InvalidAccessKeyId.NotFound": "provider_credentials",
    "isp.RAM_PERMISSION_DENY": "provider_credentials",
}
RATE_LIMIT_PAUSE = 60.0  # seconds every sender of the account waits after a throttling answer


def percent_encode(value: str) -> str:
    """RFC 3986 encoding as Aliyun signs it (``quote`` already keeps "~" and writes %20, %2A)."""
    return quote(value, safe="")


def sign(params: dict[str, str], secret: str, method: str = "POST") -> str:
    """Aliyun RPC signature (version 1.0, HMAC-SHA1) of ``params``."""
    canonical = "&".join(
        f"{percent_encode(k)}={percent_encode(v)}" for k, v in sorted(params.items())
    )
    to_sign = f"{method}&{percent_encode('/')}&{percent_encode(canonical)}"
    digest = hmac.new(f"{secret}&".encode(), to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def gateway_number(e164: str) -> str:
    """Aliyun's PhoneNumbers form: mainland numbers bare, others with the country code, no "+"."""
    number = e164.lstrip("+")
    return number[2:] if e164.startswith("+86") else number


def split_signature(text: str) -> tuple[str | None, str]:
    """(the 【signature】 name or None, the text without it)."""
    match = _SIGNATURE.search(text or "")
    if not match:
        return None, (text or "").strip()
    name = match.group(1) or match.group(2)
    return name, (text[: match.start()] + text[match.end() :]).strip()


@register_channel
class SmsChannel(Channel):
    name = "sms"
    idempotent = False  # SMS gateways do not dedupe on OutId: a resend is a second SMS

    def _template(self, message: dict) -> tuple[str, str, dict]:
        """(sign name, template code, template params) of a rendered message."""
        if message.get("template_code"):
            sign_name = message.get("sign_name") or self.setting("SMS_SIGN_NAME", "")
            return sign_name, message["template_code"], dict(message.get("params") or {})
        signature, content = split_signature(message.get("text") or "")
        if not content:
            raise PermanentError("invalid_message", "the SMS text is empty")
        sign_name = signature or self.setting("SMS_SIGN_NAME", "")
        code = self.setting("SMS_TEMPLATE_CODE", DEFAULT_TEMPLATE_CODE)
        return sign_name, code, {"content": content}

    def request_params(self, out: Outbound, phone: str) -> dict[str, str]:
        """The signed form parameters of one SendSms call."""
        key_id = self.setting("SMS_ACCESS_KEY_ID", "")
        secret = self.setting("SMS_ACCESS_KEY_SECRET", "")
        if not key_id or not secret:
            raise PermanentError("not_configured", "SMS_ACCESS_KEY_ID / _SECRET are not set")
        sign_name, code, params = self._template(out.message)
        if not sign_name:
            raise PermanentError("not_configured", "no SMS signature (SMS_SIGN_NAME)")
        request = {
            "AccessKeyId": key_id,
            "Action": "SendSms",
            "Format": "JSON",
            "RegionId": self.setting("SMS_REGION_ID", DEFAULT_REGION),
            "SignatureMethod": "HMAC-SHA1",
            "SignatureNonce": uuid.uuid4().hex,
            "SignatureVersion": "1.0",
            "Timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "Version": API_VERSION,
            "PhoneNumbers": gateway_number(phone),
            "SignName": sign_name,
            "TemplateCode": code,
            "TemplateParam": orjson.dumps(params).decode(),
            "OutId": out.key,
        }
        request["Signature"] = sign(request, secret)
        return request

    def send(self, out: Outbound) -> Sent:
        phone = phone_of(out.profile_id)
        params = self.request_params(out, phone)
        account = params["AccessKeyId"]
        acquire(self.name, account, self.config)
        url = self.setting("SMS_BASE_URL", DEFAULT_BASE_URL).rstrip("/") + "/"
        response = http.post(url, data=params, what="SendSms", timeout=self.timeout())
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not body.get("Code"):
            error = http.status_error(response, "SendSms")
            if error is not None:
                raise error
            raise PermanentError("provider_rejected", f"SendSms: HTTP {response.status_code}")
        answer = {k: body.get(k) for k in ("Code", "Message", "BizId", "RequestId") if k in body}
        code = str(body["Code"])
        if code == "OK":
            return Sent(
                provider_id=str(body.get("BizId") or "") or None, account=account, response=answer
            )
        raise self._error(code, str(body.get("Message") or "")[:200], response, account)

    def _error(self, code: str, message: str, response, account: str):
        detail = f"{code}: {message}"
        if code in UNREACHABLE:
            return PermanentError(UNREACHABLE[code], detail, unreachable=True)
        if code in RECIPIENT_LIMITED:
            return RateLimited("provider_rate_limited", detail, RATE_LIMIT_PAUSE)
        if code in ACCOUNT_LIMITED:
            slow_down(self.name, account, RATE_LIMIT_PAUSE, self.config)
            return RateLimited("provider_rate_limited", detail, RATE_LIMIT_PAUSE)
        if code in TRANSIENT or response.status_code >= 500:
            return TransientError("provider_unavailable", detail, http.retry_after(response))
        return PermanentError(PERMANENT.get(code, "provider_rejected"), detail)
