"""Ingestion bookkeeping: rejected or flagged events (violations) and the downstream outbox."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from cdp.db import BigIntPK, JSONType, UTCDateTime, db, utcnow


class Violation(db.Model):
    """An event that broke the spec or the source's tracking plan; nothing is dropped silently.

    ``rejected`` events were not stored; flagged ones were stored and are listed here too.
    The payload may hold personal data, so it is kept encrypted.
    """

    __tablename__ = "violations"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    source_id: Mapped[str] = mapped_column(sa.ForeignKey("sources.id", ondelete="CASCADE"))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    message_id: Mapped[str | None] = mapped_column(sa.String(100))
    event_type: Mapped[str | None] = mapped_column(sa.String(16))
    event_name: Mapped[str | None] = mapped_column(sa.String(200))
    batch_index: Mapped[int | None]
    field: Mapped[str] = mapped_column(sa.String(200))
    reason: Mapped[str] = mapped_column(sa.String(500))
    rejected: Mapped[bool] = mapped_column(default=True)
    payload_encrypted: Mapped[bytes | None] = mapped_column(sa.LargeBinary)

    __table_args__ = (sa.Index("ix_violations_source_received", "source_id", "received_at"),)


class OutboxBatch(db.Model):
    """Events committed together, awaiting downstream processing (segments, journeys).

    Written in the ingest transaction, so committed events always have work queued for
    them; the sweeper re-enqueues batches that Redis lost.
    """

    __tablename__ = "outbox_batches"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    source_id: Mapped[str] = mapped_column(sa.ForeignKey("sources.id", ondelete="CASCADE"))
    event_ids: Mapped[list] = mapped_column(JSONType)
    profile_ids: Mapped[list] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(default=0)

    __table_args__ = (sa.Index("ix_outbox_batches_pending", "processed_at", "created_at"),)


class InboundBatch(db.Model):
    """Accepted messages of one request, committed before the ack, not yet resolved.

    With deferred resolution (``INGEST_DEFER_RESOLUTION``) the tracking API only validates
    and appends the batch here; a drain job resolves identities and stores the events, and
    deletes the row in that same transaction, so each message is stored exactly once.
    The messages may hold personal data, so they are kept encrypted.
    """

    __tablename__ = "inbound_batches"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    source_id: Mapped[str] = mapped_column(sa.ForeignKey("sources.id", ondelete="CASCADE"))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    message_count: Mapped[int]
    payload_encrypted: Mapped[bytes] = mapped_column(sa.LargeBinary)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(default=0)
