"""What every channel connector does the same way: find its source, refuse bad requests
(recorded for source health, payload masked), and hand canonical messages to the pipeline.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from datetime import UTC, datetime

import sqlalchemy as sa
from flask import Blueprint, Response, g, request
from werkzeug.exceptions import Forbidden, NotFound, ServiceUnavailable

from cdp.db import db, utcnow
from cdp.exceptions import Unavailable
from cdp.ingest.pipeline import IngestResult, ingest
from cdp.models import Source
from cdp.sources import source_options
from connectors import health
from connectors.http_body import http_error
from web.extensions import limiter

log = logging.getLogger(__name__)
RETRY_AFTER = "2"
MAX_MESSAGE_ID = 100
SOURCE_CACHE_SECONDS = 2.0
_sources: dict[str, tuple[float, Source, dict]] = {}


def unavailable():
    return http_error(
        ServiceUnavailable, "the database is unavailable; retry later", {"Retry-After": RETRY_AFTER}
    )


@functools.lru_cache(maxsize=256)
def _options(source_id: str, blob: bytes) -> dict:
    return source_options(Source(id=source_id, options_encrypted=blob))


def _load(source_id: str) -> tuple[Source | None, dict]:
    try:
        source = db.session.get(Source, source_id)
    except (sa.exc.OperationalError, sa.exc.InterfaceError):
        db.session.rollback()
        raise unavailable() from None
    if source is None:
        return None, {}
    options = (
        dict(_options(source.id, source.options_encrypted)) if source.options_encrypted else {}
    )
    # Detach it and end the read transaction: a request waiting for a group commit must not
    # hold one of the pool's connections meanwhile.
    db.session.expunge(source)
    db.session.rollback()
    return source, options


def connector_source(source_id: str, kind: str) -> tuple[Source, dict]:
    """The enabled source ``source_id`` of ``kind`` and its decrypted options; 404/403/503.

    Enabled sources are remembered for ``SOURCE_CACHE_SECONDS`` per process (a busy
    endpoint then skips a query per request), so disabling a source or changing its options
    takes effect within that time.
    """
    now = time.monotonic()
    cached = _sources.get(source_id)
    if cached is not None and cached[0] > now:
        source, options = cached[1], cached[2]
    else:
        source, options = _load(source_id)
        if source is not None and source.enabled:
            if len(_sources) > 1000:
                _sources.clear()
            _sources[source_id] = (now + SOURCE_CACHE_SECONDS, source, options)
    if source is None or source.kind != kind:
        raise http_error(NotFound, f"no {kind} source '{source_id[:40]}'")
    if not source.enabled:
        raise http_error(Forbidden, "this source is disabled")
    g.connector_source_id = source.id
    return source, dict(options)


def forget_sources() -> None:
    """Drop the cached sources (tests, and after a source is edited in this process)."""
    _sources.clear()


def record_failures(bp: Blueprint) -> None:
    """Record every 4xx/5xx answer of ``bp`` for the source's health (not unknown sources).

    Views set ``g.connector_source_id`` once the source is known and ``g.connector_payload``
    once the body is read; the message is the one the JSON error body carries.
    """

    @bp.after_request
    def _record(response: Response) -> Response:
        source_id = g.get("connector_source_id")
        if source_id and response.status_code >= 400:
            body = response.get_json(silent=True) or {}
            reason = str(body.get("message") or response.status)
            health.record_error(source_id, response.status_code, reason, g.get("connector_payload"))
        return response


def ingest_messages(
    source: Source,
    messages: list[dict],
    received_at: datetime | None = None,
    requests: int = 1,
    defer: bool = False,
) -> IngestResult:
    """Ingest through the pipeline (one transaction); 503 when the database is down.

    ``requests``: how many HTTP requests the messages came in (a group commit has several).
    ``defer``: ack once committed and resolve identities in the drain job (see
    cdp.ingest.inbound); for endpoints that answer without needing the profile.
    """
    received_at = received_at or utcnow()
    try:
        result = ingest(source, messages, received_at, defer=defer)
    except Unavailable:
        raise unavailable() from None
    health.count(
        source.id,
        last_event_at=received_at if result.accepted else None,
        requests=requests,
        events=result.accepted,
        duplicates=result.duplicates,
        rejected=len(result.rejected),
    )
    return result


# --- option schemas: `cdp sources create --option k=v` passes every value as a string -----


def int_option(low: int, high: int) -> dict:
    return {
        "anyOf": [
            {"type": "integer", "minimum": low, "maximum": high},
            {"type": "string", "pattern": "^[0-9]{1,7}$"},
        ]
    }


def number_option(high: float) -> dict:
    return {
        "anyOf": [
            {"type": "number", "exclusiveMinimum": 0, "maximum": high},
            {"type": "string", "pattern": "^[0-9]{1,6}(\\.[0-9]{1,3})?$"},
        ]
    }


BOOL_OPTION = {"anyOf": [{"type": "boolean"}, {"enum": ["true", "false", "1", "0", "yes", "no"]}]}


def flag(value, default: bool) -> bool:
    """A boolean option given as JSON or as a CLI string."""
    if value is None:
        return default
    if isinstance(value, str):
        return value.lower() in ("true", "1", "yes")
    return bool(value)


# --- helpers for building canonical messages ----------------------------------------------


def iso_from_unix(seconds: int | float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def message_id(*parts) -> str:
    """A readable dedupe key from ``parts``, hashed when it would be longer than 100 chars."""
    text = ":".join(str(p) for p in parts)
    if len(text) <= MAX_MESSAGE_ID:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:40]
    return f"{str(parts[0])[:20]}:{digest}"


def external_id(type_: str, value, collection: str | None = None) -> dict:
    ext = {"type": type_, "id": str(value)}
    if collection:
        ext["collection"] = collection
    return ext


@limiter.request_filter
def _limited_per_source() -> bool:
    """Machine endpoints are limited per source (tracking API) or not at all, not per route.

    flask-limiter otherwise walks its route limits on every request: a tenth of a WeChat
    push's CPU for nothing, since no limit is declared on these blueprints.
    """
    return request.path.startswith(("/v1/", "/connectors/"))
