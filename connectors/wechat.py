"""WeChat official account (公众号) server push: URL verification and event/message delivery.

``GET /connectors/wechat/<source_id>``: WeChat's URL check. ``signature`` is SHA-1 over the
sorted token, timestamp and nonce; on a match ``echostr`` is echoed. (With
``msg_signature``, the WeCom-style check: ``echostr`` is encrypted and its plaintext is
echoed.)

``POST`` the same URL: plain mode (``signature`` checked) or safe mode (``encrypt_type=aes``:
``msg_signature`` over token, timestamp, nonce and ``Encrypt`` checked, AES-256-CBC
decrypted by wechatpy, trailing appid checked). XML is parsed by defusedxml (no DTD, no
entities) after a 64 KB cap. The canonical events (``wechat_events``) are committed
through the pipeline, then ``success`` is answered, well inside WeChat's 5 s; WeChat's
retries carry the same dedupe key and are acknowledged without being stored twice.
"""

from __future__ import annotations

import functools
import hmac
import logging

from flask import Blueprint, Response, g, request
from wechatpy.crypto import PrpCrypto, WeChatCrypto
from wechatpy.exceptions import InvalidAppIdException
from wechatpy.utils import WeChatSigner
from werkzeug.exceptions import BadRequest, Forbidden

from cdp.db import utcnow
from cdp.models import Source
from cdp.sources import SourceKind
from connectors import batcher
from connectors.base import (
    BOOL_OPTION,
    connector_source,
    int_option,
    number_option,
    record_failures,
)
from connectors.http_body import KB, http_error, read_body
from connectors.wechat_events import PushError, parse_push
from connectors.xmlsafe import XmlRefused, parse_xml
from web.extensions import csrf

log = logging.getLogger(__name__)

KIND = "wechat"
MAX_PUSH_BYTES = 64 * KB
APP_ID = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}
API_BASE = {"type": "string", "pattern": "^https?://[^\\s]+$", "maxLength": 300}

bp = Blueprint("connector_wechat", __name__, url_prefix="/connectors/wechat")
csrf.exempt(bp)  # WeChat's servers authenticate with the token signature, not a session
record_failures(bp)


class WechatSourceKind(SourceKind):
    name = KIND
    label = "WeChat official account (公众号)"
    options_schema = {
        "type": "object",
        "required": ["app_id", "token"],
        "properties": {
            "app_id": APP_ID,
            "token": {"type": "string", "pattern": "^[A-Za-z0-9]{3,32}$"},
            "aes_key": {"type": "string", "pattern": "^[A-Za-z0-9]{43}$"},
            "app_secret": {"type": "string", "minLength": 1, "maxLength": 128},
            "api_base": API_BASE,
            "sync_followers": BOOL_OPTION,
            "sync_interval_hours": int_option(1, 720),
            "rate_per_second": number_option(1000),
        },
        "additionalProperties": False,
    }
    secret_options = ("token", "aes_key", "app_secret")

    def endpoint_urls(self, base_url: str, source: Source) -> dict[str, str]:
        return {"push": f"{base_url}/connectors/wechat/{source.id}"}


@functools.lru_cache(maxsize=128)
def _crypto(token: str, aes_key: str, app_id: str) -> WeChatCrypto:
    return WeChatCrypto(token, aes_key, app_id)


def _forbidden(message: str):
    return http_error(Forbidden, message)


def _signature(*parts: str) -> str:
    signer = WeChatSigner()  # sha1 of the sorted parts, as WeChat computes it
    signer.add_data(*parts)
    return signer.signature


def _check_plain_signature(token: str, args) -> None:
    expected = _signature(token, args.get("timestamp", ""), args.get("nonce", ""))
    if not hmac.compare_digest(expected, args.get("signature", "").lower()):
        raise _forbidden("signature does not match (token, timestamp, nonce)")


def _decrypt(options: dict, args, encrypted: str) -> str:
    """The plaintext of a safe-mode payload; 403 on a bad msg_signature or appid, 400 if garbled."""
    if not options.get("aes_key"):
        raise _forbidden("safe mode (encrypt_type=aes) is not configured for this source")
    crypto = _crypto(options["token"], options["aes_key"], options["app_id"])
    expected = _signature(
        options["token"], args.get("timestamp", ""), args.get("nonce", ""), encrypted
    )
    if not hmac.compare_digest(expected, args.get("msg_signature", "").lower()):
        raise _forbidden("msg_signature does not match (token, timestamp, nonce, Encrypt)")
    try:
        return PrpCrypto(crypto.key).decrypt(encrypted, options["app_id"])
    except InvalidAppIdException:
        raise _forbidden("the encrypted message is for another app id") from None
    except Exception as exc:  # base64, padding, length or UTF-8 errors of a garbled payload
        raise http_error(
            BadRequest, f"Encrypt cannot be decrypted ({type(exc).__name__})"
        ) from None


@bp.get("/<source_id>")
def verify_url(source_id: str):
    """WeChat's server-URL check: echo ``echostr`` when the signature matches."""
    _, options = connector_source(source_id, KIND)
    args = request.args
    echostr = args.get("echostr", "")
    if args.get("msg_signature"):
        plain = _decrypt(options, args, echostr)
        return Response(plain, mimetype="text/plain")
    _check_plain_signature(options["token"], args)
    return Response(echostr, mimetype="text/plain")


def _xml(raw: bytes | str) -> dict:
    try:
        return parse_xml(raw)
    except XmlRefused as exc:
        raise http_error(BadRequest, str(exc)) from None


def read_push(options: dict, raw: bytes, args) -> dict:
    """Verify and decode one push body into its XML fields (403 / 400 on failure)."""
    if args.get("encrypt_type", "raw").lower() == "aes":
        if args.get("signature"):
            _check_plain_signature(options["token"], args)
        envelope = _xml(raw)
        encrypted = envelope.get("Encrypt")
        if not isinstance(encrypted, str) or not encrypted:
            raise http_error(BadRequest, "safe-mode body has no Encrypt element")
        return _xml(_decrypt(options, args, encrypted))
    _check_plain_signature(options["token"], args)
    return _xml(raw)


@bp.post("/<source_id>")
def receive(source_id: str):
    """One push: verify, parse, commit its events, then answer ``success``."""
    received_at = utcnow()
    source, options = connector_source(source_id, KIND)
    raw = read_body(MAX_PUSH_BYTES, what="the WeChat push")
    g.connector_payload = raw
    push = read_push(options, raw, request.args)
    try:
        messages = parse_push(push, options["app_id"])
    except PushError as exc:
        raise http_error(BadRequest, str(exc)) from None
    g.connector_payload = None  # accepted from here on: nothing to show as an error payload
    batcher.submit(source, messages, received_at)
    return Response("success", mimetype="text/plain")


def parse_message(payload: bytes | str | dict, app_id: str) -> list[dict]:
    """Canonical messages of one plain-mode push (XML text or an already parsed dict).

    For ``cdp seed-demo`` and tests: the same parser the endpoint uses, without HTTP.
    """
    push = payload if isinstance(payload, dict) else parse_xml(payload)
    return parse_push(push, app_id)
