"""Deferred identity resolution: the drain job turns committed inbound batches into events.

The tracking API acks a batch once its accepted messages are committed as one
``inbound_batches`` row (``ingest(..., defer=True)``): validation, dedupe against stored
events and the violations happen in the request; identity resolution, merges and the
event rows happen here, in the ``process_pending`` drain job, in id order. Each inbound
row is deleted in the transaction that stores its events, so a worker killed half-way
leaves the row to be claimed again (after ``CLAIM_TTL``) and nothing is stored twice.
Messages repeated across batches still in flight are dropped here by the same dedupe.
"""

from __future__ import annotations

import logging

import orjson
import sqlalchemy as sa

from cdp.db import db, utcnow
from cdp.ingest import pipeline
from cdp.ingest.tasks import CLAIM_TTL, claim_rows, register_inbound_resolver
from cdp.models import InboundBatch, Source
from cdp.pii import vault

log = logging.getLogger(__name__)
CLAIM_CHUNK = 20  # inbound batches (of up to 100 messages from the SDKs) claimed at a time
# Messages stored in one transaction. Larger groups cost less per event but hold SQLite's
# write lock longer, and the tracking API's appends wait behind it.
GROUP_MESSAGES = 500
_INBOUND = InboundBatch.__table__
_ROWS = sa.select(
    _INBOUND.c.id,
    _INBOUND.c.source_id,
    _INBOUND.c.received_at,
    _INBOUND.c.message_count,
    _INBOUND.c.payload_encrypted,
)


def _claimable(now):
    return sa.or_(_INBOUND.c.claimed_at.is_(None), _INBOUND.c.claimed_at < now - CLAIM_TTL)


def pending_count() -> int:
    """Inbound batches not resolved yet (for status pages and tests)."""
    return db.session.scalar(sa.select(sa.func.count()).select_from(_INBOUND))


def resolve_pending(limit: int = CLAIM_CHUNK) -> int:
    """Claim up to ``limit`` inbound batches and resolve them; returns how many were claimed.

    Consecutive batches of a source are stored together, up to ``GROUP_MESSAGES`` messages a
    transaction (each transaction has fixed costs: identity preloads, the outbox row, the
    commit); a group that fails is retried batch by batch, and a batch that fails keeps
    its claim and is taken again once the claim expires.
    """
    ids = claim_rows(_INBOUND, _claimable(utcnow()), "claimed_at", limit)
    if not ids:
        return 0
    rows = db.session.execute(_ROWS.where(_INBOUND.c.id.in_(ids)).order_by(_INBOUND.c.id)).all()
    db.session.rollback()  # end the read; each group is its own transaction
    for group in _groups(rows):
        try:
            _resolve(group)
            continue
        except Exception:
            db.session.rollback()
            if len(group) == 1:
                log.exception("inbound batch %s failed; retried after %s", group[0].id, CLAIM_TTL)
                continue
        for row in group:
            try:
                _resolve([row])
            except Exception:
                db.session.rollback()
                log.exception("inbound batch %s failed; retried after %s", row.id, CLAIM_TTL)
    return len(ids)


def _groups(rows) -> list[list]:
    groups: list[list] = []
    size = 0
    for row in rows:
        if (
            groups
            and groups[-1][0].source_id == row.source_id
            and size + row.message_count <= (GROUP_MESSAGES)
        ):
            groups[-1].append(row)
            size += row.message_count
        else:
            groups.append([row])
            size = row.message_count
    return groups


def resolve(inbound_id: int) -> int:
    """Store one inbound batch's events (resolving identities); returns how many were stored."""
    row = db.session.execute(_ROWS.where(_INBOUND.c.id == inbound_id)).first()
    db.session.rollback()
    if row is None:
        return 0  # resolved already by another drain job
    return _resolve([row])


def _resolve(rows) -> int:
    """Store the events of inbound batches of one source in one transaction."""
    source = db.session.get(Source, rows[0].source_id)
    merged = pipeline.Prepared([], [], [], 0)
    for row in rows:
        messages = orjson.loads(vault().decrypt(row.payload_encrypted, row.source_id.encode()))
        # The request rejected the invalid messages and applied the tracking plan: what it
        # acked stays accepted, even if the plan changed since. Identifier values it did not
        # look at (a malformed phone, a blocked card number) are flagged now.
        prepared = pipeline.prepare(source, messages, row.received_at, apply_plan=False)
        for candidate in prepared.candidates:
            candidate.received_at = row.received_at
        merged.candidates += prepared.candidates
        merged.violations += prepared.violations
        merged.rejected += prepared.rejected
    ids = tuple(row.id for row in rows)
    result = pipeline.store_with_retries(source, merged, rows[0].received_at, ids)
    return result.accepted if result is not None else 0


def init_app(app) -> None:
    register_inbound_resolver(resolve_pending)
