"""SMS delivery reports and replies from an Aliyun-style gateway → canonical events.

The gateway POSTs a JSON array of reports, Aliyun ``SmsReport`` style::

    [{"phone_number": "13800138000", "success": true, "err_code": "DELIVERED",
      "err_msg": "用户接收成功", "biz_id": "932702304080415357^0", "out_id": "<our key>",
      "send_time": "2024-05-01 10:00:00", "report_time": "2024-05-01 10:00:05"}]

to ``POST /connectors/sms/reports`` (the oldest enabled ``sms`` source stores them; the
token is the app's ``SMS_CALLBACK_TOKEN``) or ``POST /connectors/sms/<source_id>/reports``
(the source's ``callback_token``, else ``SMS_CALLBACK_TOKEN``). The token is sent as
``?token=…`` (gateways let you configure a URL, not headers) or ``Authorization: Bearer …``
and compared in constant time: missing → 401, wrong → 403. Bodies are capped at 256 KB.

Each report about a number some profile holds (reports never create profiles) is one
``sms_delivery_report`` track on the ``phone`` identifier with ``biz_id``, ``out_id``,
``delivered``, ``err_code``, ``err_msg``; its dedupe key is ``sms:<biz_id>:<status>``, so
a replayed report is stored once. The answer is Aliyun's
``{"code": 0, "msg": "成功"}`` (anything else makes the gateway retry) plus counts.
``journeys.channels.receipts`` turns the events into delivery statuses.

Replies (Aliyun ``SmsUpReport``: ``[{"phone_number", "content", "send_time", "sign_name",
"dest_code", "sequence_id"}]``) go to ``…/replies`` with the same tokens; each becomes an
``sms_reply`` track with ``properties.text``, so a "TD" / "T" / "退订" reply withdraws SMS
marketing consent (``cdp.privacy.consent_events``); dedupe key ``sms-up:<sequence_id>``.
"""

from __future__ import annotations

import hmac
from datetime import datetime
from zoneinfo import ZoneInfo

import orjson
import sqlalchemy as sa
from flask import Blueprint, Response, current_app, g, request
from werkzeug.exceptions import BadRequest, Forbidden, NotFound, Unauthorized

from cdp.db import db, utcnow
from cdp.exceptions import ValidationFailed
from cdp.identity.types import make_identifier
from cdp.models import Identity, Source
from cdp.pii import vault
from cdp.sources import SourceKind
from connectors.base import (
    connector_source,
    external_id,
    ingest_messages,
    message_id,
    record_failures,
    unavailable,
)
from connectors.http_body import KB, http_error, parse_json, read_body
from journeys.channels.base import setting
from web.extensions import csrf

KIND = "sms"
MAX_BODY = 256 * KB
MAX_REPORTS = 1000
TZ = ZoneInfo("Asia/Shanghai")  # Aliyun's report times are Beijing time without an offset

bp = Blueprint("connector_sms", __name__, url_prefix="/connectors/sms")
csrf.exempt(bp)  # the gateway authenticates with the callback token
record_failures(bp)


class SmsSourceKind(SourceKind):
    name = KIND
    label = "SMS gateway (delivery reports and replies)"
    options_schema = {
        "type": "object",
        "properties": {"callback_token": {"type": "string", "minLength": 16, "maxLength": 256}},
        "additionalProperties": False,
    }
    secret_options = ("callback_token",)

    def endpoint_urls(self, base_url: str, source: Source) -> dict[str, str]:
        return {
            "reports": f"{base_url}/connectors/sms/{source.id}/reports",
            "replies": f"{base_url}/connectors/sms/{source.id}/replies",
        }


def _presented_token() -> str | None:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.args.get("token")


def check_token(expected: str | None) -> None:
    """401 without a token, 403 with a wrong one (or when none is configured)."""
    presented = _presented_token()
    if not presented:
        raise http_error(
            Unauthorized, "a callback token is required (?token= or Authorization: Bearer)"
        )
    if not expected:
        raise http_error(Forbidden, "no SMS callback token is configured")
    if not hmac.compare_digest(presented.encode(), str(expected).encode()):
        raise http_error(Forbidden, "the callback token does not match")


def _text(value, limit: int) -> str:
    return str(value)[:limit] if value not in (None, "") else ""


def _time(value) -> str | None:
    """A gateway time ("2024-05-01 10:00:05", Beijing time) as ISO 8601, or None."""
    try:
        parsed = datetime.fromisoformat(str(value).replace("/", "-"))
    except (TypeError, ValueError):
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=TZ)).isoformat()


def _delivered(value) -> bool:
    return value is True or str(value).lower() in ("true", "1")


def report_message(report: dict, index: int) -> dict:
    """The canonical event of one report; BadRequest naming the field when it is unusable."""
    if not isinstance(report, dict):
        raise http_error(BadRequest, f"report {index} is not an object", field=f"{index}")
    biz_id, phone = _text(report.get("biz_id"), 64), _text(report.get("phone_number"), 32)
    if not biz_id:
        raise http_error(BadRequest, f"report {index} has no biz_id", field=f"{index}.biz_id")
    if not phone:
        raise http_error(BadRequest, f"report {index} has no phone_number", field=f"{index}.phone")
    delivered = _delivered(report.get("success"))
    status = "ok" if delivered else _text(report.get("err_code"), 32) or "failed"
    message = {
        "type": "track",
        "event": "sms_delivery_report",
        "messageId": message_id("sms", biz_id, status),
        "properties": {
            "channel": "sms",
            "biz_id": biz_id,
            "out_id": _text(report.get("out_id"), 160),
            "delivered": delivered,
            "err_code": _text(report.get("err_code"), 32),
            "err_msg": _text(report.get("err_msg"), 200),
            "send_time": _time(report.get("send_time")),
        },
        "context": {"externalIds": [external_id("phone", phone)], "channel": "sms"},
    }
    at = _time(report.get("report_time"))
    if at:
        message["timestamp"] = at
    return message


def reply_message(reply: dict, index: int) -> dict:
    """The canonical ``sms_reply`` event of one upstream message (a person answering)."""
    if not isinstance(reply, dict):
        raise http_error(BadRequest, f"reply {index} is not an object", field=f"{index}")
    sequence, phone = _text(reply.get("sequence_id"), 64), _text(reply.get("phone_number"), 32)
    if not sequence:
        raise http_error(
            BadRequest, f"reply {index} has no sequence_id", field=f"{index}.sequence_id"
        )
    if not phone:
        raise http_error(BadRequest, f"reply {index} has no phone_number", field=f"{index}.phone")
    message = {
        "type": "track",
        "event": "sms_reply",
        "messageId": message_id("sms-up", sequence),
        "properties": {
            "channel": "sms",
            "text": _text(reply.get("content"), 500).strip(),
            "sign_name": _text(reply.get("sign_name"), 64),
            "dest_code": _text(reply.get("dest_code"), 32),
        },
        "context": {"externalIds": [external_id("phone", phone)], "channel": "sms"},
    }
    at = _time(reply.get("send_time"))
    if at:
        message["timestamp"] = at
    return message


def _parse(raw: bytes, one) -> list[dict]:
    """Canonical messages of a gateway body (an array, or one object)."""
    payload = parse_json(raw, "the request body")
    items = payload if isinstance(payload, list) else [payload]
    if len(items) > MAX_REPORTS:
        raise http_error(BadRequest, f"at most {MAX_REPORTS} items per request")
    return [one(item, i) for i, item in enumerate(items)]


def parse_reports(raw: bytes) -> list[dict]:
    return _parse(raw, report_message)


def parse_replies(raw: bytes) -> list[dict]:
    return _parse(raw, reply_message)


def _phone_index(message: dict) -> str | None:
    try:
        return make_identifier(vault(), "phone", message["context"]["externalIds"][0]["id"]).index
    except ValidationFailed:
        return None


def known_only(messages: list[dict]) -> list[dict]:
    """The reports about numbers some profile holds. A report must never create a profile:
    a late one for a person erased meanwhile would bring their number back."""
    indexes = {i: _phone_index(m) for i, m in enumerate(messages)}
    wanted = {index for index in indexes.values() if index}
    known = set()
    if wanted:
        known = set(
            db.session.scalars(
                sa.select(Identity.value_index).where(
                    Identity.type == "phone", Identity.value_index.in_(wanted)
                )
            )
        )
        db.session.rollback()  # end the read transaction before the ingest's own
    return [m for i, m in enumerate(messages) if indexes[i] in known]


def _default_source() -> Source:
    try:
        source = db.session.scalar(
            sa.select(Source)
            .where(Source.kind == KIND, Source.enabled.is_(True))
            .order_by(Source.created_at, Source.id)
            .limit(1)
        )
        if source is not None:
            db.session.expunge(source)  # kept loaded while the read transaction ends
        db.session.rollback()
    except (sa.exc.OperationalError, sa.exc.InterfaceError):
        db.session.rollback()
        raise unavailable() from None
    if source is None:
        raise http_error(
            NotFound, "no enabled sms source: create one (cdp sources create --kind sms)"
        )
    g.connector_source_id = source.id
    return source


def _store(source: Source, parse=parse_reports) -> Response:
    received_at = utcnow()
    raw = read_body(MAX_BODY, what="the request body")
    g.connector_payload = raw
    reports = parse(raw)
    try:
        messages = known_only(reports)
    except (sa.exc.OperationalError, sa.exc.InterfaceError):
        db.session.rollback()
        raise unavailable() from None
    result = ingest_messages(source, messages, received_at) if messages else None
    g.connector_payload = None
    answer = {
        "code": 0,
        "msg": "成功",
        "accepted": result.accepted if result else 0,
        "duplicates": result.duplicates if result else 0,
        "rejected": result.rejected if result else [],
        "unknown_numbers": len(reports) - len(messages),
    }
    return Response(orjson.dumps(answer), mimetype="application/json")


@bp.post("/reports")
def reports():
    """Reports authenticated by the app's ``SMS_CALLBACK_TOKEN``."""
    check_token(setting(current_app.config, "SMS_CALLBACK_TOKEN"))
    return _store(_default_source())


@bp.post("/<source_id>/reports")
def source_reports(source_id: str):
    """Reports for one ``sms`` source (its ``callback_token``, else ``SMS_CALLBACK_TOKEN``)."""
    source, options = connector_source(source_id, KIND)
    check_token(options.get("callback_token") or setting(current_app.config, "SMS_CALLBACK_TOKEN"))
    return _store(source)


@bp.post("/replies")
def replies():
    """Replies (upstream messages) authenticated by the app's ``SMS_CALLBACK_TOKEN``."""
    check_token(setting(current_app.config, "SMS_CALLBACK_TOKEN"))
    return _store(_default_source(), parse_replies)


@bp.post("/<source_id>/replies")
def source_replies(source_id: str):
    """Replies for one ``sms`` source (its ``callback_token``, else ``SMS_CALLBACK_TOKEN``)."""
    source, options = connector_source(source_id, KIND)
    check_token(options.get("callback_token") or setting(current_app.config, "SMS_CALLBACK_TOKEN"))
    return _store(source, parse_replies)
