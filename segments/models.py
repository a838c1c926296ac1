"""Segments and their membership history (one row per stint: entered_at .. exited_at)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from cdp.db import BigIntPK, JSONType, UTCDateTime, db, utcnow
from cdp.models import Event

SEGMENT_STATUSES = ("active", "archived")


class Segment(db.Model):
    """A rule (JSON, see segments/schema/segment.schema.json) and what was derived from it."""

    __tablename__ = "segments"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(120))
    description: Mapped[str] = mapped_column(sa.Text, default="")
    definition: Mapped[dict] = mapped_column(JSONType)
    # Bumped on every change of the definition; segment events carry it.
    version: Mapped[int] = mapped_column(default=1)
    status: Mapped[str] = mapped_column(sa.String(16), default="active")
    # Re-checked after each ingested batch whose events or profiles can change the answer.
    realtime: Mapped[bool] = mapped_column(default=True)
    # Minutes between scheduled refreshes; None: 60 for time-based rules, 1440 otherwise.
    refresh_minutes: Mapped[int | None]
    # Derived from the definition when it is saved (referenced segments included).
    health_data: Mapped[bool] = mapped_column(default=False)
    time_based: Mapped[bool] = mapped_column(default=False)
    depends_on: Mapped[list] = mapped_column(JSONType, default=list)
    references: Mapped[list] = mapped_column(JSONType, default=list)
    size: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    refreshed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # {"at", "entered", "exited", "ms", "reason"} of the last full refresh.
    last_refresh: Mapped[dict] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL")
    )

    __table_args__ = (
        sa.CheckConstraint("status IN ('active', 'archived')", name="status_known"),
        sa.Index("ix_segments_status_name", "status", "name"),
    )


class SegmentMembership(db.Model):
    """A profile's stint in a segment; ``exited_at`` is None while it is a member.

    The size on any past instant T is the number of rows with entered_at <= T and
    (exited_at is None or exited_at > T).
    """

    __tablename__ = "segment_memberships"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    segment_id: Mapped[int] = mapped_column(sa.ForeignKey("segments.id", ondelete="CASCADE"))
    profile_id: Mapped[int] = mapped_column(sa.ForeignKey("profiles.id", ondelete="CASCADE"))
    entered_at: Mapped[datetime] = mapped_column(UTCDateTime)
    exited_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        # At most one open stint per profile and segment; also the members-by-id index.
        sa.Index(
            "uq_segment_memberships_open",
            "segment_id",
            "profile_id",
            unique=True,
            sqlite_where=sa.text("exited_at IS NULL"),
            postgresql_where=sa.text("exited_at IS NULL"),
        ),
        sa.Index("ix_segment_memberships_profile", "profile_id"),
        sa.Index("ix_segment_memberships_entered", "segment_id", "entered_at"),
        sa.Index("ix_segment_memberships_exited", "segment_id", "exited_at"),
    )


# Event conditions read (name, time window) -> profile ids; with profile_id in the index those
# scans never touch the table (SQLite "covering index", PostgreSQL index-only scans). It makes
# ix_events_name_timestamp (cdp/models/events.py) redundant: same leading columns.
EVENTS_BY_NAME = sa.Index(
    "ix_events_name_timestamp_profile",
    Event.__table__.c.name,
    Event.__table__.c.timestamp,
    Event.__table__.c.profile_id,
)
