"""Write and verify the hash-chained audit log.

Each row's hash covers its own fields and the previous row's hash, so a row
edited or deleted by hand breaks the chain at that point. Rows carry ids and
counts only, never personal data values.
"""

from __future__ import annotations

import hashlib

import orjson
import sqlalchemy as sa

from cdp.actors import Actor
from cdp.db import db, utcnow
from cdp.models.audit import AuditEntry

GENESIS = "0" * 64
# Serialises chain appends across PostgreSQL sessions; SQLite has one writer anyway.
_PG_LOCK_KEY = 0x43445041  # "CDPA"


def _digest(entry: AuditEntry) -> str:
    payload = orjson.dumps(
        [
            entry.at.isoformat(),
            entry.actor_type,
            entry.actor_id,
            entry.action,
            entry.object_type,
            entry.object_id,
            entry.ip,
            entry.request_id,
            entry.outcome,
            entry.details or {},
            entry.prev_hash,
        ],
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(payload).hexdigest()


def record(
    actor: Actor,
    action: str,
    object_type: str | None = None,
    object_id: object = None,
    outcome: str = "ok",
    **details,
) -> AuditEntry:
    """Append an audit row to the current transaction (the caller commits)."""
    session = db.session
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_LOCK_KEY)))
    session.flush()
    prev = session.scalar(sa.select(AuditEntry.row_hash).order_by(AuditEntry.id.desc()).limit(1))
    entry = AuditEntry(
        at=utcnow(),
        actor_type=actor.kind,
        actor_id=actor.audit_id,
        action=action,
        object_type=object_type,
        object_id=None if object_id is None else str(object_id),
        ip=actor.ip,
        request_id=actor.request_id,
        outcome=outcome,
        details=details,
        prev_hash=prev or GENESIS,
    )
    entry.row_hash = _digest(entry)
    session.add(entry)
    session.flush()
    return entry


def verify_chain(batch_size: int = 5000) -> int | None:
    """Return the id of the first row whose hash or link is wrong, or None if intact."""
    prev = GENESIS
    last_id = 0
    while True:
        rows = db.session.scalars(
            sa.select(AuditEntry)
            .where(AuditEntry.id > last_id)
            .order_by(AuditEntry.id)
            .limit(batch_size)
        ).all()
        if not rows:
            return None
        for row in rows:
            if row.prev_hash != prev or _digest(row) != row.row_hash:
                return row.id
            prev = row.row_hash
            last_id = row.id
        db.session.expunge_all()
