"""Signed requests: HMAC-SHA256 signatures, a timestamp window and single-use nonces.

A nonce is claimed in its own short transaction before the events are ingested and
released again if ingestion fails (so the sender's retry with the same signed request
works after a 503). Nonces older than the window are useless to an attacker (the
timestamp check refuses them) and are pruned.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson
import sqlalchemy as sa
from flask import Response, g
from sqlalchemy.dialects import postgresql, sqlite
from werkzeug.exceptions import Conflict, Unauthorized

from cdp.db import db, utcnow
from cdp.models import Source
from connectors.base import ingest_messages, unavailable
from connectors.http_body import http_error
from connectors.models import ConnectorNonce

WINDOW_SECONDS = 300
PRUNE_EVERY_SECONDS = 60.0
_pruned = {"at": 0.0}
_lock = threading.Lock()


def sign(secret: str, timestamp: str, nonce: str, body: bytes) -> str:
    """Hex HMAC-SHA256 over ``timestamp\nnonce\n`` + body (what senders compute)."""
    message = f"{timestamp}\n{nonce}\n".encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class SignedRequests:
    """One connector's signing headers; ``verify`` checks them against its secret."""

    timestamp: str
    nonce: str
    signature: str
    realm: str

    def _unauthorized(self, message: str):
        challenge = {"WWW-Authenticate": f'HMAC-SHA256 realm="{self.realm}"'}
        return http_error(Unauthorized, message, challenge)

    def verify(self, secret: str, headers, body: bytes) -> str:
        """Check timestamp and signature; return the nonce (not yet claimed)."""
        timestamp, nonce = headers.get(self.timestamp), headers.get(self.nonce, "")
        signature = headers.get(self.signature, "")
        if not signature:
            raise self._unauthorized(f"{self.signature} is required (HMAC-SHA256 of the body)")
        problem = timestamp_problem(timestamp)
        if problem:
            raise self._unauthorized(problem)
        if not 8 <= len(nonce) <= 64 or not nonce.isascii():
            raise self._unauthorized(f"{self.nonce} must be 8 to 64 ASCII characters")
        expected = sign(secret, timestamp.strip(), nonce, body)
        if not hmac.compare_digest(expected, signature.strip().lower()):
            raise self._unauthorized("signature does not match (timestamp, nonce, body)")
        return nonce

    def ingest_once(
        self,
        source: Source,
        nonce: str,
        messages: list[dict],
        positions: list[int],
        skipped: list[dict],
        received_at: datetime,
        before: Callable[[], object] | None = None,
    ) -> Response:
        """Claim the request's nonce, ingest ``messages`` (releasing the nonce if that fails)
        and answer with rejections at the sender's positions (``positions[i]`` is where
        ``messages[i]`` stood in the request). ``before`` runs after the claim, before ingesting.
        """
        try:
            fresh = claim(source.id, nonce)
        except sa.exc.SQLAlchemyError:
            raise unavailable() from None
        if not fresh:
            raise http_error(Conflict, f"{self.nonce} was already used: a replayed request")
        try:
            if before is not None:
                before()
            result = ingest_messages(source, messages, received_at) if messages else None
        except BaseException:
            db.session.rollback()
            release(source.id, nonce)
            raise
        g.connector_payload = None
        answer = {
            "success": True,
            "accepted": result.accepted if result else 0,
            "duplicates": result.duplicates if result else 0,
            "rejected": [{**r, "index": positions[r["index"]]} for r in result.rejected]
            if result
            else [],
            "skipped": skipped,
        }
        return Response(orjson.dumps(answer), mimetype="application/json")


def timestamp_problem(raw: str | None, now: float | None = None) -> str | None:
    """Why ``raw`` (Unix seconds) is not an acceptable request time, or None."""
    if not raw or not raw.strip().lstrip("-").isdigit():
        return "the timestamp header is missing or not Unix seconds"
    skew = abs((now or time.time()) - int(raw))
    if skew > WINDOW_SECONDS:
        return f"the timestamp is {int(skew)} s away from our clock (allowed: {WINDOW_SECONDS} s)"
    return None


def claim(source_id: str, nonce: str) -> bool:
    """Record ``nonce`` as used; False if this source already used it (a replay)."""
    _maybe_prune()
    table = ConnectorNonce.__table__
    with db.engine.begin() as conn:
        dialect = conn.dialect.name
        insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
        statement = insert.values(source_id=source_id, nonce=nonce, seen_at=utcnow())
        # RETURNING, not rowcount: psycopg reports -1 for INSERT … ON CONFLICT DO NOTHING.
        done = conn.execute(statement.on_conflict_do_nothing().returning(table.c.nonce))
        return done.first() is not None


def release(source_id: str, nonce: str) -> None:
    """Forget a claimed nonce (its request failed before anything was stored)."""
    table = ConnectorNonce.__table__
    try:
        with db.engine.begin() as conn:
            conn.execute(
                sa.delete(table).where(table.c.source_id == source_id, table.c.nonce == nonce)
            )
    except sa.exc.SQLAlchemyError:
        pass  # the database is down: the sender's retry needs a fresh nonce


def _maybe_prune() -> None:
    with _lock:
        if time.monotonic() - _pruned["at"] < PRUNE_EVERY_SECONDS:
            return
        _pruned["at"] = time.monotonic()
    cutoff = utcnow() - timedelta(seconds=2 * WINDOW_SECONDS)
    table = ConnectorNonce.__table__
    with db.engine.begin() as conn:
        conn.execute(sa.delete(table).where(table.c.seen_at < cutoff))
