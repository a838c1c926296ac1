"""Segment events from the internal source: the source itself, the events, their outbox batches.

Real-time processing writes a few of these per batch, so the statements are built once.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from cdp.db import JSONType, UTCDateTime, db, utcnow
from cdp.models import Event, OutboxBatch, Source

INTERNAL_SOURCE_ID = "src_internal"
OUTBOX_CHUNK = 1000


def dialect() -> str:
    return db.session.get_bind().dialect.name


def _source_insert(name: str):
    insert = (postgresql.insert if name == "postgresql" else sqlite.insert)(Source.__table__)
    return insert.values(
        id=INTERNAL_SOURCE_ID,
        name="CarePath internal events",
        kind="internal",
        enabled=True,
        default_profile_kind="patient",
        created_at=sa.bindparam("at", type_=UTCDateTime()),
    ).on_conflict_do_nothing(index_elements=["id"])


_INTERNAL = sa.select(Source.__table__.c.id).where(Source.__table__.c.id == INTERNAL_SOURCE_ID)


def ensure_internal_source() -> None:
    """The source segment events come from (created on first use, in the caller's transaction)."""
    connection = db.session.connection()
    # Looked up first: the INSERT … ON CONFLICT construct is compiled anew at every use.
    if connection.execute(_INTERNAL).first() is None:
        connection.execute(_source_insert(dialect()), {"at": utcnow()})


EVENT_COLUMNS = ["source_id", "message_id", "profile_id", "type", "name", "timestamp"]
EVENT_COLUMNS += ["received_at", "properties", "context"]


def insert_events():
    """INSERT INTO events that skips a message already stored (re-runs are idempotent)."""
    insert = (postgresql.insert if dialect() == "postgresql" else sqlite.insert)(Event)
    return insert.on_conflict_do_nothing(index_elements=["source_id", "message_id"])


# insert_events() as text (which SQLAlchemy caches compiled; its ON CONFLICT construct it
# compiles anew at every use): real-time processing stores a few events per batch.
_STORE = sa.text(
    f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) "
    f"VALUES ({', '.join(':' + c for c in EVENT_COLUMNS)}) "
    "ON CONFLICT (source_id, message_id) DO NOTHING RETURNING id, profile_id"
).bindparams(
    sa.bindparam("timestamp", type_=UTCDateTime()),
    sa.bindparam("received_at", type_=UTCDateTime()),
    sa.bindparam("properties", type_=JSONType),
    sa.bindparam("context", type_=JSONType),
)


def store_events(rows: list[dict]) -> list[tuple[int, int]]:
    """Insert segment events (skipping stored ones); (event id, profile id) of those added."""
    connection = db.session.connection()
    return [tuple(found) for row in rows for found in connection.execute(_STORE, row)]


_OUTBOX_INSERT = sa.insert(OutboxBatch.__table__).returning(OutboxBatch.__table__.c.id)


def write_outbox(rows: list[tuple[int, int]]) -> list[int]:
    """Outbox batches for (event id, profile id) rows, so downstream processors see them."""
    ids = []
    for start in range(0, len(rows), OUTBOX_CHUNK):
        chunk = rows[start : start + OUTBOX_CHUNK]
        values = {
            "source_id": INTERNAL_SOURCE_ID,
            "event_ids": [event_id for event_id, _ in chunk],
            "profile_ids": sorted({profile_id for _, profile_id in chunk}),
            "enqueued_at": utcnow(),
        }
        ids.append(db.session.connection().execute(_OUTBOX_INSERT, values).scalar_one())
    return ids
