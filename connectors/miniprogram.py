"""WeChat mini-program: login (``wx.login`` → code2Session), event upload, phone binding.

- ``POST …/login`` ``{"code"}``: code2Session gives openid (and unionid when the app is bound
  to an Open Platform account). We keep a session row and answer a signed session token
  (itsdangerous, keyed with ``CDP_SECRET_KEY``); ``session_key`` never leaves this function
  and is not stored.
- ``POST …/events`` (``Authorization: Bearer <token>``) ``{"events": [...]}``: page views,
  clicks, quiz answers… in the Segment shape. Identity comes from the session only (the
  client cannot name other people): ``miniprogram_openid:<appid>`` + ``wechat_unionid``.
  ``wx.requestSubscribeMessage``'s answer, sent as ``subscribe_message_result`` with
  ``properties.results = {template_id: "accept" | "reject" | "ban"}``, becomes one
  ``subscribe_accepted`` / ``subscribe_refused`` event per template (``template_id``).
- ``POST …/phone`` ``{"code"}`` (Bearer): the phone button's one-time code → the phone API →
  a ``phone`` identifier on the profile (the number is answered masked).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import timedelta

import orjson
import sqlalchemy as sa
from flask import Blueprint, Response, current_app, g, request
from itsdangerous import BadSignature, URLSafeTimedSerializer
from werkzeug.exceptions import BadGateway, BadRequest, TooManyRequests, Unauthorized

from cdp.db import db, utcnow
from cdp.models import Source
from cdp.sources import SourceKind
from connectors import batcher
from connectors.base import (
    connector_source,
    external_id,
    ingest_messages,
    message_id,
    record_failures,
    unavailable,
)
from connectors.http_body import KB, http_error, read_json_object
from connectors.models import MiniprogramSession
from connectors.wechat import API_BASE, APP_ID
from connectors.wechat_api import RateLimited, Transient, WechatApiError, WechatClient
from web.extensions import csrf

KIND = "miniprogram"
SESSION_DAYS = 30
MAX_EVENTS = 100
MAX_BODY = 64 * KB
EVENT_TYPES = ("track", "page", "screen", "identify")
CONTEXT_KEYS = ("page", "screen", "locale", "timezone", "app", "os", "network", "campaign")
IDENTIFYING_TRAITS = ("phone", "mobile", "email")
SUBSCRIBE_RESULT = "subscribe_message_result"

bp = Blueprint("connector_miniprogram", __name__, url_prefix="/connectors/miniprogram")
csrf.exempt(bp)
record_failures(bp)


class MiniprogramSourceKind(SourceKind):
    name = KIND
    label = "WeChat mini-program (小程序)"
    options_schema = {
        "type": "object",
        "required": ["app_id", "app_secret"],
        "properties": {
            "app_id": APP_ID,
            "app_secret": {"type": "string", "minLength": 1, "maxLength": 128},
            "api_base": API_BASE,
        },
        "additionalProperties": False,
    }
    secret_options = ("app_secret",)

    def endpoint_urls(self, base_url: str, source: Source) -> dict[str, str]:
        root = f"{base_url}/connectors/miniprogram/{source.id}"
        return {"login": f"{root}/login", "events": f"{root}/events", "phone": f"{root}/phone"}


def client_factory(options: dict) -> WechatClient:
    """An API client for a request: short timeouts, little retrying (a user is waiting)."""
    return WechatClient(
        options["app_id"],
        options["app_secret"],
        options.get("api_base"),
        timeout=5.0,
        max_attempts=2,
        rate_limit_attempts=1,
        backoff=0.2,
    )


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt="miniprogram-session")


def _api_error(exc: WechatApiError):
    if isinstance(exc, RateLimited):
        return http_error(TooManyRequests, f"WeChat rate limit: {exc}", {"Retry-After": "60"})
    if isinstance(exc, Transient):
        return http_error(BadGateway, f"WeChat API unreachable: {exc}")
    return http_error(BadRequest, f"WeChat refused the code: {exc}")


def _code(body: dict) -> str:
    code = body.get("code")
    if not isinstance(code, str) or not 1 <= len(code) <= 128:
        raise http_error(
            BadRequest, "code (from wx.login / the phone button) is required", field="code"
        )
    return code


def _session_ids(session: MiniprogramSession, app_id: str) -> list[dict]:
    ids = [external_id("miniprogram_openid", session.openid, app_id)]
    if session.unionid:
        ids.append(external_id("wechat_unionid", session.unionid))
    return ids


@bp.post("/<source_id>/login")
def login(source_id: str):
    source, options = connector_source(source_id, KIND)
    code = _code(read_json_object(MAX_BODY))
    try:
        result = client_factory(options).code_to_session(code)
    except WechatApiError as exc:
        raise _api_error(exc) from None
    openid = result.get("openid")
    if not openid:
        raise http_error(BadGateway, "code2Session returned no openid")
    now = utcnow()
    session = MiniprogramSession(
        id=secrets.token_hex(16),
        source_id=source.id,
        openid=openid,
        unionid=result.get("unionid") or None,
        created_at=now,
        expires_at=now + timedelta(days=SESSION_DAYS),
    )
    message = {
        "type": "identify",
        "messageId": f"mp-login:{session.id}",
        "timestamp": now.isoformat(),
        "context": {"externalIds": _session_ids(session, options["app_id"]), "channel": KIND},
    }
    outcome = ingest_messages(source, [message], now)
    session.profile_id = outcome.profile_ids[0] if outcome.profile_ids else None
    try:
        db.session.add(session)
        db.session.commit()
    except sa.exc.SQLAlchemyError:
        db.session.rollback()
        raise unavailable() from None
    token = _serializer().dumps({"s": session.id, "src": source.id})
    answer = {
        "session_token": token,
        "expires_in": SESSION_DAYS * 86400,
        "unionid": bool(session.unionid),
    }
    return Response(orjson.dumps(answer), mimetype="application/json")


def _session(source: Source) -> MiniprogramSession:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise http_error(
            Unauthorized, "Authorization: Bearer <session token from /login> is required"
        )
    try:
        data = _serializer().loads(token.strip(), max_age=SESSION_DAYS * 86400)
    except BadSignature:
        raise http_error(Unauthorized, "invalid or expired session token") from None
    session_id = data.get("s") if isinstance(data, dict) else None
    row = db.session.get(MiniprogramSession, session_id) if isinstance(session_id, str) else None
    if row is not None:
        db.session.expunge(row)
    db.session.rollback()
    if row is None or row.source_id != source.id or row.revoked_at or row.expires_at < utcnow():
        raise http_error(Unauthorized, "invalid or expired session token")
    return row


def _subscribe_results(message: dict, index: int) -> list[dict]:
    results = (message.get("properties") or {}).get("results")
    if not isinstance(results, dict) or not results:
        raise http_error(
            BadRequest, f"events.{index}.properties.results must map template ids to answers"
        )
    out = []
    base = {k: v for k, v in message.items() if k not in ("event", "properties", "messageId")}
    props = {k: v for k, v in message["properties"].items() if k != "results"}
    for template_id, answer in results.items():
        name = "subscribe_accepted" if answer == "accept" else "subscribe_refused"
        mid = message_id(message["messageId"], template_id)
        extra = {"template_id": str(template_id)[:128], "answer": str(answer)[:16]}
        out.append({**base, "event": name, "messageId": mid, "properties": {**props, **extra}})
    return out


def canonical_events(events, session: MiniprogramSession, app_id: str) -> list[dict]:
    """The client's events with identity taken from the session; 400 on a malformed one."""
    if not isinstance(events, list) or not 1 <= len(events) <= MAX_EVENTS:
        raise http_error(
            BadRequest, f"events must be an array of 1 to {MAX_EVENTS} events", field="events"
        )
    out = []
    for i, event in enumerate(events):
        if not isinstance(event, dict) or event.get("type", "track") not in EVENT_TYPES:
            raise http_error(
                BadRequest, f"events.{i} must be an object of type {', '.join(EVENT_TYPES)}"
            )
        client_id = str(event.get("messageId") or uuid.uuid4())
        context = {k: v for k, v in (event.get("context") or {}).items() if k in CONTEXT_KEYS}
        context.update(externalIds=_session_ids(session, app_id), channel=KIND)
        message = {
            "type": event.get("type", "track"),
            "messageId": message_id("mp", session.openid, client_id),
            "properties": event.get("properties") or {},
            "context": context,
        }
        for key in ("event", "name", "timestamp", "sentAt"):
            if event.get(key) is not None:
                message[key] = event[key]
        traits = {
            k: v for k, v in (event.get("traits") or {}).items() if k not in IDENTIFYING_TRAITS
        }
        if traits:
            message["traits"] = traits
        if message.get("event") == SUBSCRIBE_RESULT:
            out += _subscribe_results(message, i)
        else:
            out.append(message)
    return out


def parse_events(events: list, app_id: str, openid: str, unionid: str | None = None) -> list[dict]:
    """Canonical messages of a mini-program event upload for a user, without HTTP (seed-demo)."""
    session = MiniprogramSession(id="demo", openid=openid, unionid=unionid)
    return canonical_events(events, session, app_id)


@bp.post("/<source_id>/events")
def events(source_id: str):
    received_at = utcnow()
    source, options = connector_source(source_id, KIND)
    session = _session(source)
    body = read_json_object(MAX_BODY)
    g.connector_payload = orjson.dumps(body)
    messages = canonical_events(body.get("events", body.get("batch")), session, options["app_id"])
    rejected = batcher.submit(source, messages, received_at)
    if len(rejected) == len(messages):  # nothing could be stored: the SDK should not retry
        first = rejected[0]
        message = f"every event was rejected; first: [{first['index']}] {first['field']}: {first['reason']}"
        raise http_error(BadRequest, message)
    g.connector_payload = None
    answer = {"success": True, "received": len(messages), "rejected": rejected}
    return Response(orjson.dumps(answer), mimetype="application/json")


def _masked(phone: str) -> str:
    return phone[:-8] + "****" + phone[-4:] if len(phone) > 8 else "****"


@bp.post("/<source_id>/phone")
def phone(source_id: str):
    source, options = connector_source(source_id, KIND)
    session = _session(source)
    code = _code(read_json_object(MAX_BODY))
    try:
        info = client_factory(options).phone_number(code)
    except WechatApiError as exc:
        raise _api_error(exc) from None
    watermark = (info.get("watermark") or {}).get("appid")
    if watermark and watermark != options["app_id"]:
        raise http_error(BadGateway, "the phone number is for another app id")
    number = info.get("purePhoneNumber") or info.get("phoneNumber")
    if not number:
        raise http_error(BadGateway, "the phone API returned no number")
    e164 = f"+{info.get('countryCode') or 86}{number}" if info.get("purePhoneNumber") else number
    digest = hashlib.sha256(code.encode()).hexdigest()[:16]
    message = {
        "type": "identify",
        "messageId": f"mp-phone:{session.id}:{digest}",
        "timestamp": utcnow().isoformat(),
        "traits": {"phone": e164},
        "context": {"externalIds": _session_ids(session, options["app_id"]), "channel": KIND},
    }
    ingest_messages(source, [message])
    answer = {"success": True, "phone": _masked(e164)}
    return Response(orjson.dumps(answer), mimetype="application/json")
