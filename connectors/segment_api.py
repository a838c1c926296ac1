"""The Segment-compatible tracking API: ``/v1/identify … /v1/batch`` and the SDKs' short aliases.

Any Segment or RudderStack SDK works unchanged when its host points here. The write
key is the HTTP Basic user name (the password is ignored unless the user name is empty),
or ``writeKey`` in the JSON body (analytics.js sends text/plain bodies carrying it). Views stay thin: read and authorise the
request, call :func:`cdp.ingest.pipeline.ingest`, serialise its result. The 2xx is
sent only after ``ingest`` has committed, so an acknowledged event is never lost.
"""

from __future__ import annotations

import functools
import logging
import math
import time

import limits
import orjson
import sqlalchemy as sa
from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import BadRequest, ServiceUnavailable, TooManyRequests, Unauthorized

from cdp.db import db, utcnow
from cdp.exceptions import Unavailable
from cdp.ingest.pipeline import ingest
from cdp.models.sources import Source
from cdp.sources import SourceKind, source_for_write_key
from connectors.http_body import KB, http_error, read_json_object
from web.extensions import csrf, limiter

log = logging.getLogger(__name__)

# Segment's limits: 32 KB per call, 500 KB per batch request, and a cap on events per batch.
MAX_EVENT_BYTES = 32 * KB
MAX_BATCH_BYTES = 500 * KB
MAX_BATCH_EVENTS = 2500
DEFAULT_SOURCE_RATE_LIMIT = "1000 per second"
RETRY_AFTER_UNAVAILABLE = "2"
RATE_SCOPE = "tracking-source"

# Single-event calls and the one-letter aliases analytics.js and the mobile SDKs post to.
SINGLE_CALLS = {
    "identify": "i",
    "track": "t",
    "page": "p",
    "screen": "s",
    "group": "g",
    "alias": "a",
}
BATCH_PATHS = ("batch", "b", "import")
TRACKING_CALLS = (*SINGLE_CALLS, "batch")
# Top-level keys of a batch body that apply to every message (the message's own values win).
BATCH_DEFAULTS = ("context", "integrations")

bp = Blueprint("tracking_api", __name__, url_prefix="/v1")
csrf.exempt(bp)  # no cookies are read or set: the write key authenticates each request


class HttpSourceKind(SourceKind):
    name = "http"
    label = "HTTP tracking API (Segment-compatible)"
    has_write_key = True
    options_schema = {
        "type": "object",
        "properties": {"channel": {"type": "string", "maxLength": 32}},
        "additionalProperties": False,
    }

    def endpoint_urls(self, base_url: str, source: Source) -> dict[str, str]:
        return {call: f"{base_url}/v1/{call}" for call in TRACKING_CALLS}


# --- authentication -----------------------------------------------------------------------


def _unauthorized(message: str):
    return http_error(Unauthorized, message, {"WWW-Authenticate": 'Basic realm="cdp"'})


def _unavailable():
    return http_error(
        ServiceUnavailable,
        "the database is unavailable; retry later",
        {"Retry-After": RETRY_AFTER_UNAVAILABLE},
    )


def _basic_write_key() -> str | None:
    auth = request.authorization
    if auth is None or auth.type != "basic":
        return None
    # The key is the user name; a few clients put it in the password with an empty user.
    return auth.username or auth.password or None


def _authenticate(write_key) -> Source:
    """The enabled source of ``write_key``; 401 otherwise. The key itself is never logged."""
    if not write_key or not isinstance(write_key, str):
        raise _unauthorized(
            "a write key is required: send it as the HTTP Basic user name (or as writeKey)"
        )
    try:
        source = source_for_write_key(write_key)
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        db.session.rollback()
        log.warning("tracking api: database unavailable: %s", exc.__class__.__name__)
        raise _unavailable() from None
    if source is None:
        raise _unauthorized("unknown or disabled write key")
    return source


def _read_request(limit: int) -> tuple[Source, dict]:
    """Authorise and parse the request: (source, JSON body without its writeKey)."""
    header_key = _basic_write_key()
    # With the key in the header, refuse a bad one before reading the body.
    source = _authenticate(header_key) if header_key else None
    body = read_json_object(limit)
    body_key = body.pop("writeKey", None)
    if source is None:
        source = _authenticate(body_key)
    return source, body


# --- rate limiting, per source ------------------------------------------------------------


@functools.cache
def _parsed_limits(value: str) -> tuple:
    return tuple(limits.parse_many(value))


def check_source_rate_limit(source_id: str) -> None:
    """Count one request of the source against ``SOURCE_RATE_LIMIT``; 429 when over it.

    Uses flask-limiter's storage and strategy (memory, or Redis shared by every process),
    keyed by the source, so one noisy source cannot starve the others. The limit is checked
    here rather than by decorating the views, because the key is only known once the write
    key is resolved, and so that flask-limiter does not rewrite our 503's ``Retry-After``.
    If the limiter's storage is down, requests are let through: ingestion matters more.
    """
    if not limiter.enabled:
        return
    items = _parsed_limits(current_app.config.get("SOURCE_RATE_LIMIT") or DEFAULT_SOURCE_RATE_LIMIT)
    strategy = limiter.limiter
    try:
        breached = [item for item in items if not strategy.hit(item, RATE_SCOPE, source_id)]
        if not breached:
            return
        reset = max(
            strategy.get_window_stats(i, RATE_SCOPE, source_id).reset_time for i in breached
        )
    except Exception as exc:  # the limiter's storage (Redis) is unreachable: fail open
        log.warning("tracking api: rate limit not checked: %s", exc.__class__.__name__)
        return
    retry_after = max(1, math.ceil(reset - time.time()))
    raise http_error(
        TooManyRequests,
        f"rate limit of this source exceeded ({breached[0]}); retry after {retry_after} s",
        {"Retry-After": str(retry_after)},
    )


# --- views --------------------------------------------------------------------------------


def _json(body: dict, status: int) -> Response:
    return Response(orjson.dumps(body), status=status, mimetype="application/json")


def _ingest_and_respond(source: Source, messages: list, received_at) -> Response:
    check_source_rate_limit(source.id)
    try:
        result = ingest(
            source, messages, received_at, defer=current_app.config["INGEST_DEFER_RESOLUTION"]
        )
    except Unavailable:
        raise _unavailable() from None
    body = result.as_dict()
    if messages and len(result.rejected) == len(messages):
        first = result.rejected[0]
        message = (
            f"every event was rejected ({len(messages)}); "
            f"first: [{first['index']}] {first['field']}: {first['reason']}"
        )
        return _json({"success": False, "code": 400, "message": message, **body}, 400)
    return _json({"success": True, **body}, 200)


def _merge(defaults: dict, own: dict) -> dict:
    """``own`` laid over ``defaults``, recursively for nested objects."""
    merged = dict(defaults)
    for key, value in own.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def canonical(message, defaults: dict | None = None, sent_at=None):
    """A wire message as the pipeline expects it (anything not an object is left to reject).

    SDKs send ``"userId": null`` for anonymous calls: a null means absent in the spec. The
    batch's top-level ``context``/``integrations`` and ``sentAt`` fill in what the message
    does not say itself. ``writeKey`` (analytics.js puts it in every message) is dropped.
    """
    if not isinstance(message, dict):
        return message
    message = {k: v for k, v in message.items() if v is not None and k != "writeKey"}
    for key, value in (defaults or {}).items():
        own = message.get(key, {})
        if isinstance(own, dict):
            message[key] = _merge(value, own)
    if sent_at and not message.get("sentAt"):
        message["sentAt"] = sent_at
    return message


def batch():
    """Accept up to 2,500 calls of any type in ``{"batch": [...]}`` (one transaction)."""
    received_at = utcnow()
    source, body = _read_request(MAX_BATCH_BYTES)
    messages = body.get("batch")
    if not isinstance(messages, list):
        raise http_error(BadRequest, "batch must be a JSON array of events", field="batch")
    if len(messages) > MAX_BATCH_EVENTS:
        raise http_error(
            BadRequest,
            f"batch has {len(messages)} events; at most {MAX_BATCH_EVENTS} are allowed per request",
            field="batch",
        )
    defaults = {k: body[k] for k in BATCH_DEFAULTS if isinstance(body.get(k), dict)}
    messages = [canonical(m, defaults, body.get("sentAt")) for m in messages]
    return _ingest_and_respond(source, messages, received_at)


def _single_view(call: str):
    def view():
        received_at = utcnow()
        source, body = _read_request(MAX_EVENT_BYTES)
        message = canonical(body)
        if message.get("type") in (None, ""):
            message["type"] = call
        return _ingest_and_respond(source, [message], received_at)

    view.__name__ = view.__qualname__ = f"{call}_view"
    view.__doc__ = f"Accept one {call} call (Segment spec)."
    return view


for _call, _short in SINGLE_CALLS.items():
    _view = _single_view(_call)
    for _path in (_call, _short):
        bp.add_url_rule(f"/{_path}", endpoint=_path, view_func=_view, methods=["POST"])
for _path in BATCH_PATHS:
    bp.add_url_rule(f"/{_path}", endpoint=_path, view_func=batch, methods=["POST"])


@bp.after_request
def _cors(response: Response) -> Response:
    # Browsers (analytics.js) post cross-origin; no cookies are involved, so any origin may.
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
    response.headers["Access-Control-Allow-Headers"] = (
        "Authorization, Content-Type, Content-Encoding"
    )
    response.headers["Access-Control-Max-Age"] = "86400"
    return response
