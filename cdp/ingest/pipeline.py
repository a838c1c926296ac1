"""The ingestion pipeline: validate, dedupe, resolve identity, append events, commit, hand off.

A batch is one transaction (group commit); the caller acks only after ``ingest``
returns, so an acked event is durable. Downstream work is one outbox row per
batch, written in the same transaction; after the commit a drain job is made sure
to be queued (one job serves every batch committed before it starts).

With ``defer=True`` (the tracking API, see cdp.ingest.inbound) the request only
validates and dedupes the batch and commits its accepted messages as one encrypted
``inbound_batches`` row; the drain job resolves identities and stores the events
later, through the same ``_store``, deleting the inbound row in that transaction.

Messages are validated and prepared (identifiers normalised, PII encrypted) before
the transaction starts; the transaction then does only database work. On SQLite it
starts by taking the write lock (``lock_for_writing``), so its dedupe and identity
reads cannot be overtaken by another writer. On PostgreSQL concurrent batches may
both see a person as new: the unique index on identifiers makes the later one fail,
and it is resolved again from what the earlier one committed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

import orjson
import sqlalchemy as sa

from cdp.actors import Actor
from cdp.db import db, lock_for_writing, utcnow
from cdp.exceptions import Unavailable
from cdp.identity.blocklist import current_blocklist
from cdp.identity.resolver import Resolver, StaleRead
from cdp.ingest import plans
from cdp.ingest.messages import Candidate, Preparer, Rejected
from cdp.ingest.tasks import hand_off
from cdp.models import Event, InboundBatch, OutboxBatch, Source, Violation
from cdp.pii import vault
from cdp.privacy.tombstones import filter_batch

log = logging.getLogger(__name__)
INGEST_ACTOR = Actor(kind="system", role="admin", request_id="ingest")
# Attempts of a batch whose first sightings raced another transaction's (PostgreSQL).
_ATTEMPTS = 5
# How long a batch waits for SQLite's write lock. Batches hold it for tens of ms, so this
# is queueing behind other writers, not an outage; past it the caller gets Unavailable
# (503 + Retry-After) well before an SDK's own timeout (10-15 s) would fire and resend.
SQLITE_LOCK_WAIT_MS = 5000
# PostgreSQL: deadlock_detected, serialization_failure. SQLite never raises these.
_RETRY_SQLSTATES = frozenset({"40P01", "40001"})
_EVENTS = Event.__table__
_OUTBOX = OutboxBatch.__table__
# Built once (see cdp.identity.resolver). A plain INSERT, not ON CONFLICT DO NOTHING: that
# clause makes SQLAlchemy compile the statement on every call, and duplicates are already
# dropped; a concurrent batch storing the same message fails the unique index and is retried.
_INSERT_EVENTS = sa.insert(_EVENTS).returning(_EVENTS.c.id)
_INSERT_VIOLATIONS = sa.insert(Violation.__table__)
_INSERT_OUTBOX = sa.insert(_OUTBOX).returning(_OUTBOX.c.id)
_INBOUND = InboundBatch.__table__
_INSERT_INBOUND = sa.insert(_INBOUND)
_DELETE_INBOUND = sa.delete(_INBOUND).where(
    _INBOUND.c.id.in_(sa.bindparam("b_ids", expanding=True))
)
_STORED_MESSAGE_ID = sa.select(_EVENTS.c.message_id).where(
    _EVENTS.c.source_id == sa.bindparam("b_source"),
    _EVENTS.c.message_id == sa.bindparam("b_id"),
)
_STORED_MESSAGE_IDS = sa.select(_EVENTS.c.message_id).where(
    _EVENTS.c.source_id == sa.bindparam("b_source"),
    _EVENTS.c.message_id.in_(sa.bindparam("b_ids", expanding=True)),
)


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    flagged: int = 0
    rejected: list[dict] = field(default_factory=list)
    outbox_id: int | None = None
    profile_ids: list[int] = field(default_factory=list)
    suppressed: int = 0  # events of erased people (tombstoned identifiers), acked, not kept

    def as_dict(self) -> dict:
        answer = {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "flagged": self.flagged,
            "rejected": self.rejected,
        }
        if self.suppressed:
            answer["suppressed"] = self.suppressed
        return answer


@dataclass
class Prepared:
    """A batch after validation: what to store, and what to report and keep as violations."""

    candidates: list[Candidate]
    violations: list[dict]
    rejected: list[dict]
    flagged: int


def _violation(source: Source, received_at, index, message, field_, reason, rejected) -> dict:
    message = message if isinstance(message, dict) else {"value": message}
    return {
        "source_id": source.id,
        "received_at": received_at,
        "message_id": str(message.get("messageId"))[:100] if message.get("messageId") else None,
        "event_type": str(message.get("type"))[:16] if message.get("type") else None,
        "event_name": str(message.get("event") or message.get("name") or "")[:200] or None,
        "batch_index": index,
        "field": field_[:200],
        "reason": reason[:500],
        "rejected": rejected,
        "payload_encrypted": vault().encrypt(orjson.dumps(message), source.id.encode()),
    }


def ingest(
    source: Source, messages: list, received_at: datetime | None = None, defer: bool = False
) -> IngestResult:
    """Store the valid messages of a batch in one transaction; report the rest by index.

    ``defer``: commit the accepted messages for the drain job to resolve (profiles follow
    within seconds) instead of resolving them now; ``profile_ids`` is then empty.

    :raise Unavailable: the database cannot be reached, SQLite's write lock stayed busy,
        or concurrent batches kept racing for the same new people (nothing was stored).
    """
    received_at = received_at or utcnow()
    try:
        if defer:
            prepared = prepare(source, messages, received_at, identifiers=False)
            result = _append(source, prepared, received_at)
        else:
            prepared = prepare(source, messages, received_at)
            result = store_with_retries(source, prepared, received_at)
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        db.session.rollback()
        log.warning("ingest: database unavailable: %s", exc.__class__.__name__)
        raise Unavailable("the database is unavailable; retry later") from exc
    if result.outbox_id is not None or (defer and result.accepted):
        try:
            hand_off()
        except Exception:  # the sweeper enqueues it later; the events are committed
            log.warning("ingest: could not enqueue the drain job")
    return result


def _append(source: Source, prepared: Prepared, received_at: datetime) -> IngestResult:
    """Commit the batch's accepted messages (encrypted, one row) and its violations."""
    session = db.session
    result = IngestResult(rejected=list(prepared.rejected), flagged=prepared.flagged)
    fresh = _drop_duplicates(source.id, prepared.candidates, result)
    lock_for_writing(session, SQLITE_LOCK_WAIT_MS)
    connection = session.connection()
    if prepared.violations:
        connection.execute(_INSERT_VIOLATIONS, prepared.violations)
    if fresh:
        # The message id a message without one was given, so a re-run stores it once.
        messages = [
            c.message if c.message.get("messageId") else {**c.message, "messageId": c.message_id}
            for c in fresh
        ]
        row = {
            "source_id": source.id,
            "received_at": received_at,
            "message_count": len(messages),
            "payload_encrypted": vault().encrypt(orjson.dumps(messages), source.id.encode()),
            "attempts": 0,
        }
        connection.execute(_INSERT_INBOUND, row)
        result.accepted = len(messages)
    session.commit()
    return result


def prepare(
    source: Source,
    messages: list,
    received_at: datetime,
    apply_plan: bool = True,
    identifiers: bool = True,
) -> Prepared:
    """Validate and prepare every message (CPU only: no write, no lock held).

    ``apply_plan=False``: skip the tracking plan (it was applied when the batch was acked);
    ``identifiers=False``: only reject what is invalid (``Preparer.check``), for a batch whose
    identifiers are resolved later.
    """
    preparer = Preparer(vault(), current_blocklist(), received_at)
    examine = preparer.prepare if identifiers else preparer.check
    plan = source.tracking_plan if apply_plan else None
    mode = (plan or {}).get("mode", "allow")
    prepared = Prepared([], [], [], 0)
    for index, message in enumerate(messages):
        try:
            candidate = examine(index, message)
        except Rejected as bad:
            prepared.rejected.append({"index": index, "field": bad.field, "reason": bad.reason})
            prepared.violations.append(
                _violation(source, received_at, index, message, bad.field, bad.reason, True)
            )
            continue
        problem = plans.check(plan, candidate) if mode != "allow" else None
        if problem and mode == "block":
            prepared.rejected.append({"index": index, "field": problem[0], "reason": problem[1]})
            prepared.violations.append(
                _violation(source, received_at, index, message, *problem, True)
            )
            continue
        notes = candidate.notes + ([problem] if problem else [])
        for field_, reason in notes:
            prepared.violations.append(
                _violation(source, received_at, index, message, field_, reason, False)
            )
        prepared.flagged += bool(notes)
        prepared.candidates.append(candidate)
    return prepared


def _retryable(exc: Exception) -> bool:
    """Did the batch lose a race with another transaction (so running it again can succeed)?"""
    if isinstance(exc, StaleRead):
        return True
    if isinstance(exc, sa.exc.IntegrityError):
        # Only a duplicate key is a race (someone stored the same identifier or message first);
        # any other constraint failing is a bug that retrying would not fix.
        orig = exc.orig
        return (
            getattr(orig, "sqlstate", None) == "23505"
            or getattr(orig, "sqlite_errorname", None) == "SQLITE_CONSTRAINT_UNIQUE"
        )
    return isinstance(exc, sa.exc.DBAPIError) and (
        getattr(exc.orig, "sqlstate", None) in _RETRY_SQLSTATES
    )


def store_with_retries(
    source: Source, prepared: Prepared, received_at, inbound_ids: tuple[int, ...] = ()
) -> IngestResult | None:
    """``_store``, again when it lost a race; None if ``inbound_ids`` were stored already."""
    source_id, default_kind = source.id, source.default_profile_kind or "patient"
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            return _store(source_id, default_kind, prepared, received_at, inbound_ids)
        except (sa.exc.DBAPIError, StaleRead) as exc:
            db.session.rollback()
            if not _retryable(exc):
                raise
            if attempt == _ATTEMPTS:
                log.warning("ingest: still racing other batches after %d attempts", attempt)
                raise Unavailable("too many concurrent changes to the same people; retry") from exc
    raise AssertionError("unreachable")


def _store(
    source_id: str, default_kind: str, prepared: Prepared, received_at, inbound_ids=()
) -> IngestResult | None:
    """One attempt at the batch's transaction; commits it.

    ``inbound_ids``: the inbound batches these messages came from, deleted in the same
    transaction; if another drain job deleted them first, nothing is stored (None).
    """
    session = db.session
    result = IngestResult(rejected=list(prepared.rejected), flagged=prepared.flagged)
    lock_for_writing(session, SQLITE_LOCK_WAIT_MS)
    connection = session.connection()
    if inbound_ids:
        deleted = connection.execute(_DELETE_INBOUND, {"b_ids": list(inbound_ids)}).rowcount
        if deleted != len(inbound_ids):
            session.rollback()
            return None
    fresh = _drop_duplicates(source_id, prepared.candidates, result)
    # Erased people stay erased: their identifiers' tombstones drop new events (acked, not
    # stored) until one of them re-consents.
    fresh, result.suppressed = filter_batch(fresh)
    resolver = Resolver(session, vault(), source_id, INGEST_ACTOR)
    resolver.preload([i for c in fresh for i in c.identifiers])
    for c in fresh:
        c.profile_id = resolver.resolve(
            c.identifiers, c.kind or default_kind, c.message_id, c.link_only
        )
        if c.profile_id is not None:
            resolver.apply(c.profile_id, c.traits, c.pii, c.timestamp)
            resolver.seen(c.profile_id, c.timestamp)
    real = resolver.finish()
    rows = [
        {
            "source_id": source_id,
            "message_id": c.message_id,
            "profile_id": resolver.final_id(c.profile_id, real),
            "type": c.type,
            "name": c.name,
            "timestamp": c.timestamp,
            "received_at": c.received_at or received_at,
            "properties": c.properties,
            "context": c.context,
        }
        for c in fresh
    ]
    event_ids = list(connection.execute(_INSERT_EVENTS, rows).scalars()) if rows else []
    result.accepted = len(event_ids)
    result.profile_ids = sorted({r["profile_id"] for r in rows if r["profile_id"]})
    if prepared.violations:
        connection.execute(_INSERT_VIOLATIONS, prepared.violations)
    if event_ids:
        now = utcnow()
        outbox = {
            "source_id": source_id,
            "event_ids": event_ids,
            "profile_ids": result.profile_ids,
            "created_at": now,
            "enqueued_at": now,
            "attempts": 0,
        }
        result.outbox_id = connection.execute(_INSERT_OUTBOX, outbox).scalar_one()
    session.commit()
    return result


def _drop_duplicates(source_id: str, candidates: list[Candidate], result):
    """Drop messages already stored for this source, and repeats inside the batch."""
    ids = list({c.message_id for c in candidates})
    stored: set[str] = set()
    if len(ids) == 1:  # a single call: "= :id" is built once, an expanding IN per execution
        found = db.session.execute(_STORED_MESSAGE_ID, {"b_source": source_id, "b_id": ids[0]})
        stored = set(found.scalars())
        ids = []
    for start in range(0, len(ids), 500):
        params = {"b_source": source_id, "b_ids": ids[start : start + 500]}
        stored |= set(db.session.execute(_STORED_MESSAGE_IDS, params).scalars())
    fresh, seen = [], set()
    for c in candidates:
        if c.message_id in stored or c.message_id in seen:
            result.duplicates += 1
            continue
        seen.add(c.message_id)
        fresh.append(c)
    return fresh
