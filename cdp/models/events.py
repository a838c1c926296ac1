"""The append-only event log every connector writes and every segment and journey reads."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from cdp.db import BigIntPK, JSONType, UTCDateTime, db, utcnow

EVENT_TYPES = ("identify", "track", "page", "screen", "group", "alias")


class Event(db.Model):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    source_id: Mapped[str] = mapped_column(sa.ForeignKey("sources.id", ondelete="RESTRICT"))
    message_id: Mapped[str] = mapped_column(sa.String(100))
    profile_id: Mapped[int | None] = mapped_column(sa.ForeignKey("profiles.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(sa.String(16))
    name: Mapped[str | None] = mapped_column(sa.String(200))
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    properties: Mapped[dict] = mapped_column(JSONType, default=dict)
    context: Mapped[dict] = mapped_column(JSONType, default=dict)

    __table_args__ = (
        # Dedupe key: a retried delivery of the same message is acked, not stored twice.
        sa.UniqueConstraint("source_id", "message_id", name="uq_events_source_message"),
        sa.Index("ix_events_profile_timestamp", "profile_id", "timestamp"),
        sa.Index("ix_events_name_timestamp", "name", "timestamp"),
        sa.Index("ix_events_timestamp", "timestamp"),
    )
