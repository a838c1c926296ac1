"""Live-stream platforms: a signed webhook of doctors' registrations, joins, leaves and quizzes.

``POST /connectors/livestream/<source_id>`` with headers

- ``X-Live-Timestamp``: Unix seconds, within 5 minutes of our clock;
- ``X-Live-Nonce``: 8–64 ASCII characters, never reused by this source;
- ``X-Live-Signature``: lowercase hex HMAC-SHA256, keyed with the source's ``secret``, of
  ``timestamp + "\\n" + nonce + "\\n" + body`` (the body after any Content-Encoding).

The body is ``{"events": [...]}``; each item becomes the canonical event the doctor
engagement processor (``cdp.hcp.processor``) consumes, on the doctor's identifiers:

| ``type`` | event |
|---|---|
| ``register`` | ``hcp_meeting_registered`` |
| ``join`` / ``leave`` | ``hcp_meeting_joined`` / ``hcp_meeting_left`` |
| ``quiz_submit`` | ``hcp_quiz_submitted`` with ``answers`` |

Bad or missing signature, stale timestamp → 401; reused nonce → 409; body over 512 KB → 413;
a malformed item → 400 naming ``events.<index>.<field>``. The whole body is checked before
anything is stored. Items naming a meeting the CDP does not know are skipped (listed in the
answer), not stored. Times without a zone are Beijing time.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from flask import Blueprint, g, request
from werkzeug.exceptions import BadRequest

from cdp.db import db, utcnow
from cdp.hcp import events as hcp_events
from cdp.hcp.doctors import LICENCE_PATTERN
from cdp.models import Source
from cdp.models.hcp import Meeting
from cdp.sources import SourceKind
from connectors import replay
from connectors.base import (
    connector_source,
    external_id,
    message_id,
    record_failures,
    unavailable,
)
from connectors.http_body import KB, http_error, parse_json, read_body, require_object
from connectors.pos_parse import TZ
from web.extensions import csrf

KIND = "livestream"
MAX_BODY = 512 * KB
MAX_EVENTS = 500
SIGNED = replay.SignedRequests(
    timestamp="X-Live-Timestamp",
    nonce="X-Live-Nonce",
    signature="X-Live-Signature",
    realm="livestream",
)
EVENT_NAMES = {
    "register": hcp_events.REGISTERED,
    "join": hcp_events.JOINED,
    "leave": hcp_events.LEFT,
    "quiz_submit": hcp_events.QUIZ_SUBMITTED,
}
OPENID_KINDS = {"wechat": "wechat_openid", "miniprogram": "miniprogram_openid"}
_ID_TEXT = 128

bp = Blueprint("connector_livestream", __name__, url_prefix="/connectors/livestream")
csrf.exempt(bp)
record_failures(bp)


class LivestreamSourceKind(SourceKind):
    name = KIND
    label = "Live-stream platform (signed webhook of doctors' attendance)"
    options_schema = {
        "type": "object",
        "required": ["secret"],
        "properties": {
            "secret": {"type": "string", "minLength": 16, "maxLength": 256},
            "platform": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"},
        },
        "additionalProperties": False,
    }
    secret_options = ("secret",)

    def endpoint_urls(self, base_url: str, source: Source) -> dict[str, str]:
        return {"events": f"{base_url}/connectors/livestream/{source.id}"}


class ItemError(ValueError):
    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason


# --- items → canonical messages --------------------------------------------------------------


def _text(obj: dict, key: str, path: str, required: bool = False) -> str | None:
    value = obj.get(key)
    if value is None or value == "":
        if required:
            raise ItemError(f"{path}.{key}", f"'{key}' is a required property")
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # ids sent as numbers are ids all the same
    if not isinstance(value, str) or not value.strip():
        raise ItemError(f"{path}.{key}", f"{value!r:.40} is not a non-empty string")
    if len(value) > _ID_TEXT:
        raise ItemError(f"{path}.{key}", f"is longer than {_ID_TEXT} characters")
    return value.strip()


def _meeting(item: dict, path: str) -> int:
    value = item.get("meeting_id")
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ItemError(f"{path}.meeting_id", "the CDP meeting id (a positive integer) is required")
    return value


def _at(item: dict, path: str) -> datetime:
    raw = item.get("at")
    if not isinstance(raw, str):
        raise ItemError(f"{path}.at", "an ISO 8601 time is required")
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise ItemError(f"{path}.at", f"'{raw[:40]}' is not an ISO 8601 date-time") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=TZ)  # as for POS: platforms in China send Beijing time
    return value.astimezone(UTC)


def _doctor(item: dict, path: str) -> tuple[list[dict], str]:
    """(context.externalIds, a stable key of the doctor for the dedupe key)."""
    doctor = item.get("doctor")
    path = f"{path}.doctor"
    if not isinstance(doctor, dict):
        raise ItemError(path, "an object with license, unionid or openid (+ app_id) is required")
    ids, key = [], None
    licence = _text(doctor, "license", path)
    if licence is not None:
        if not LICENCE_PATTERN.match(licence):
            raise ItemError(f"{path}.license", "a practising-certificate number has 15 digits")
        ids.append(external_id("hcp_license", licence))
        key = f"l{licence}"
    unionid = _text(doctor, "unionid", path)
    if unionid is not None:
        ids.append(external_id("wechat_unionid", unionid))
        key = key or f"u{unionid}"
    openid = _text(doctor, "openid", path)
    if openid is not None:
        app_id = _text(doctor, "app_id", path, required=True)
        kind = doctor.get("openid_kind", "wechat")
        if kind not in OPENID_KINDS:
            raise ItemError(f"{path}.openid_kind", "must be 'wechat' or 'miniprogram'")
        ids.append(external_id(OPENID_KINDS[kind], openid, app_id))
        key = key or f"o{app_id}:{openid}"
    if not ids:
        raise ItemError(path, "license, unionid or openid (+ app_id) is required")
    return ids, key


def _answers(item: dict, path: str) -> dict:
    """``{question id: option index | [indexes]}``; a list of ``{question, answer}`` too."""
    raw, path = item.get("answers"), f"{path}.answers"
    if isinstance(raw, list):
        pairs = {}
        for n, pair in enumerate(raw):
            if not isinstance(pair, dict) or not isinstance(pair.get("question"), str):
                raise ItemError(f"{path}.{n}", "expected {'question': id, 'answer': index(es)}")
            pairs[pair["question"]] = pair.get("answer")
        raw = pairs
    if not isinstance(raw, dict) or not raw:
        raise ItemError(path, "the doctor's answers are required: {question id: option index}")
    for question, chosen in raw.items():
        chosen = [chosen] if not isinstance(chosen, list) else chosen
        if not chosen or not all(type(c) is int and c >= 0 for c in chosen):
            raise ItemError(f"{path}.{question}", "option index(es) from 0 are expected")
    return raw


def parse_events(payload: dict, platform: str) -> list[dict]:
    """Canonical messages of a webhook body, in order; ItemError names the first bad field."""
    items = payload.get("events")
    if not isinstance(items, list) or not items:
        raise ItemError("events", "a non-empty array of events is required")
    if len(items) > MAX_EVENTS:
        raise ItemError("events", f"at most {MAX_EVENTS} events per request")
    messages = []
    for index, item in enumerate(items):
        path = f"events.{index}"
        if not isinstance(item, dict):
            raise ItemError(path, "each event must be a JSON object")
        type_ = item.get("type")
        if type_ not in EVENT_NAMES:
            raise ItemError(f"{path}.type", f"must be one of {', '.join(EVENT_NAMES)}")
        meeting_id, at = _meeting(item, path), _at(item, path)
        ids, who = _doctor(item, path)
        event_id = _text(item, "id", path)
        properties = {"meeting_id": meeting_id, "platform": platform}
        if event_id is not None:
            properties["platform_event_id"] = event_id
        if type_ == "quiz_submit":
            properties["answers"] = _answers(item, path)
        key = (
            message_id("live", event_id)
            if event_id is not None
            else message_id("live", type_, who, meeting_id, at.isoformat())
        )
        messages.append({
            "type": "track", "event": EVENT_NAMES[type_], "messageId": key,
            "timestamp": at.isoformat(), "properties": properties,
            # A new viewer of a doctors' platform is a doctor; an existing profile keeps its
            # kind, and the processor ignores everyone who is not a doctor.
            "context": {"externalIds": ids, "profileKind": "hcp", "channel": "livestream"},
        })  # fmt: skip
    return messages


def _known_meetings(messages: list[dict]) -> set[int]:
    wanted = {m["properties"]["meeting_id"] for m in messages}
    try:
        found = set(db.session.scalars(sa.select(Meeting.id).where(Meeting.id.in_(wanted))))
    except (sa.exc.OperationalError, sa.exc.InterfaceError):
        db.session.rollback()
        raise unavailable() from None
    db.session.rollback()  # end the read transaction before ingest starts its own
    return found


@bp.post("/<source_id>")
def receive(source_id: str):
    received_at = utcnow()
    source, options = connector_source(source_id, KIND)
    body = read_body(MAX_BODY, what="the live-stream events body")
    g.connector_payload = body
    nonce = SIGNED.verify(options["secret"], request.headers, body)
    try:
        payload = require_object(parse_json(body))
        messages = parse_events(payload, options.get("platform") or "livestream")
    except ItemError as exc:
        raise http_error(BadRequest, str(exc), field=exc.field) from None
    known = _known_meetings(messages)
    positions = [n for n, m in enumerate(messages) if m["properties"]["meeting_id"] in known]
    skipped = [
        {"index": n, "field": f"events.{n}.meeting_id", "reason": "no such meeting"}
        for n, m in enumerate(messages)
        if m["properties"]["meeting_id"] not in known
    ]
    kept = [messages[n] for n in positions]
    return SIGNED.ingest_once(source, nonce, kept, positions, skipped, received_at)
