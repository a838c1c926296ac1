"""The ingestion pipeline: validate, dedupe, resolve identity, append events, commit, hand off.

A batch is one transaction (group commit); the caller acks only after ``ingest``
returns, so an acked event is durable. Downstream work is one outbox row per
batch, written in the same transaction and enqueued after the commit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

import jsonschema
import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from cdp.actors import Actor
from cdp.db import db, utcnow
from cdp.exceptions import Unavailable
from cdp.identity.blocklist import current_blocklist
from cdp.identity.resolver import Resolver
from cdp.ingest.messages import Candidate, Preparer, Rejected
from cdp.models import Event, OutboxBatch, Source, Violation
from cdp.pii import vault
from cdp.queue import enqueue

log = logging.getLogger(__name__)
INGEST_ACTOR = Actor(kind="system", role="admin", request_id="ingest")
_RETRIES = 3


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    flagged: int = 0
    rejected: list[dict] = field(default_factory=list)
    outbox_id: int | None = None
    profile_ids: list[int] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "flagged": self.flagged,
            "rejected": self.rejected,
        }


def _plan_check(plan: dict | None, candidate: Candidate) -> tuple[str, str] | None:
    """(field, reason) if the event breaks the source's tracking plan, else None."""
    if not plan or candidate.type != "track":
        return None
    schema = (plan.get("events") or {}).get(candidate.name)
    if schema is None:
        return ("event", f"'{candidate.name}' is not in the tracking plan")
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(schema).iter_errors(
            candidate.message.get("properties") or {}
        )
    )
    if error is None:
        return None
    path = ".".join(["properties", *[str(p) for p in error.absolute_path]])
    return (path, error.message)


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


def _insert_events(rows: list[dict]) -> list[int]:
    dialect = db.session.get_bind().dialect.name
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(Event)
    statement = insert.on_conflict_do_nothing(index_elements=["source_id", "message_id"])
    return list(db.session.scalars(statement.returning(Event.id), rows))


def ingest(source: Source, messages: list, received_at: datetime | None = None) -> IngestResult:
    """Store the valid messages of a batch in one transaction; report the rest by index.

    :raise Unavailable: the database cannot be reached (nothing was stored).
    """
    received_at = received_at or utcnow()
    try:
        return _ingest_with_retries(source, messages, received_at)
    except sa.exc.OperationalError as exc:
        db.session.rollback()
        log.warning("ingest: database unavailable: %s", exc.__class__.__name__)
        raise Unavailable("the database is unavailable; retry later") from exc
    except sa.exc.InterfaceError as exc:
        db.session.rollback()
        raise Unavailable("the database is unavailable; retry later") from exc


def _ingest_with_retries(source, messages, received_at) -> IngestResult:
    for attempt in range(_RETRIES):
        try:
            result = _ingest_once(source, messages, received_at)
            break
        except sa.exc.IntegrityError:
            # Another request created the same identifier first: re-read and resolve again.
            db.session.rollback()
            if attempt == _RETRIES - 1:
                raise
    if result.outbox_id is not None:
        try:
            enqueue("cdp.ingest.tasks.process_batch", result.outbox_id, queue="ingest")
        except Exception:  # the sweeper enqueues it later; the events are committed
            log.warning("ingest: could not enqueue outbox batch %s", result.outbox_id)
    return result


def _ingest_once(source: Source, messages: list, received_at: datetime) -> IngestResult:
    session = db.session
    result = IngestResult()
    violations: list[dict] = []
    preparer = Preparer(vault(), current_blocklist(), received_at)
    plan = source.tracking_plan
    mode = (plan or {}).get("mode", "allow")
    candidates: list[Candidate] = []
    for index, message in enumerate(messages):
        try:
            candidate = preparer.prepare(index, message)
        except Rejected as bad:
            result.rejected.append({"index": index, "field": bad.field, "reason": bad.reason})
            violations.append(
                _violation(source, received_at, index, message, bad.field, bad.reason, True)
            )
            continue
        problem = _plan_check(plan, candidate) if mode != "allow" else None
        if problem and mode == "block":
            result.rejected.append({"index": index, "field": problem[0], "reason": problem[1]})
            violations.append(_violation(source, received_at, index, message, *problem, True))
            continue
        notes = candidate.notes + ([problem] if problem else [])
        for field_, reason in notes:
            violations.append(
                _violation(source, received_at, index, message, field_, reason, False)
            )
        result.flagged += bool(notes)
        candidates.append(candidate)

    fresh = _drop_duplicates(source.id, candidates, result)
    resolver = Resolver(session, vault(), source.id, INGEST_ACTOR)
    resolver.preload([i for c in fresh for i in c.identifiers])
    default_kind = source.default_profile_kind or "patient"
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
            "source_id": source.id,
            "message_id": c.message_id,
            "profile_id": resolver.final_id(c.profile_id, real),
            "type": c.type,
            "name": c.name,
            "timestamp": c.timestamp,
            "received_at": received_at,
            "properties": c.properties,
            "context": c.context,
        }
        for c in fresh
    ]
    event_ids = _insert_events(rows) if rows else []
    result.duplicates += len(rows) - len(event_ids)
    result.accepted = len(event_ids)
    result.profile_ids = sorted({r["profile_id"] for r in rows if r["profile_id"]})
    if violations:
        session.execute(sa.insert(Violation), violations)
    if event_ids:
        outbox = OutboxBatch(
            source_id=source.id,
            event_ids=event_ids,
            profile_ids=result.profile_ids,
            enqueued_at=utcnow(),
        )
        session.add(outbox)
        session.flush()
        result.outbox_id = outbox.id
    session.commit()
    return result


def _drop_duplicates(source_id: str, candidates: list[Candidate], result: IngestResult):
    """Drop messages already stored for this source, and repeats inside the batch."""
    ids = list({c.message_id for c in candidates})
    stored: set[str] = set()
    for start in range(0, len(ids), 500):
        stored |= set(
            db.session.scalars(
                sa.select(Event.message_id).where(
                    Event.source_id == source_id, Event.message_id.in_(ids[start : start + 500])
                )
            )
        )
    fresh, seen = [], set()
    for c in candidates:
        if c.message_id in stored or c.message_id in seen:
            result.duplicates += 1
            continue
        seen.add(c.message_id)
        fresh.append(c)
    return fresh
