"""PIPL data-subject requests, erasure tombstones, event retention rules, processed-event marks."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from cdp.db import BigIntPK, JSONType, UTCDateTime, db, utcnow

REQUEST_KINDS = ("export", "erasure")
REQUEST_STATES = ("queued", "running", "completed", "failed")


class PrivacyRequest(db.Model):
    """An export or erasure of one person's data; counts only, never the data itself."""

    __tablename__ = "privacy_requests"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(16))
    # Not a foreign key: the request outlives the profile it erased.
    profile_id: Mapped[int] = mapped_column(sa.BigInteger, index=True)
    status: Mapped[str] = mapped_column(sa.String(16), default="queued")
    job_id: Mapped[int | None] = mapped_column(sa.ForeignKey("job_runs.id", ondelete="SET NULL"))
    requested_by_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    reason: Mapped[str] = mapped_column(sa.String(300), default="")
    result: Mapped[dict] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Tombstone(db.Model):
    """A keyed hash of an erased person's identifier: later events carrying it are dropped.

    The hash uses its own derivation ("tombstone:<type>:<namespace>"), so it matches none
    of the blind indexes the identity graph stored for the person.
    """

    __tablename__ = "privacy_tombstones"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    identifier_type: Mapped[str] = mapped_column(sa.String(32))
    value_hash: Mapped[str] = mapped_column(sa.String(64))
    request_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("privacy_requests.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        sa.UniqueConstraint("identifier_type", "value_hash", name="uq_privacy_tombstones_value"),
    )


class RetentionRule(db.Model):
    """How long events of one name are kept; "*" is the default for names without a rule."""

    __tablename__ = "retention_rules"

    event_name: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    days: Mapped[int] = mapped_column(sa.Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL")
    )


class ConsentEventMark(db.Model):
    """An event whose consent/credit effects were applied: makes the processor idempotent."""

    __tablename__ = "consent_event_marks"

    event_id: Mapped[int] = mapped_column(
        sa.ForeignKey("events.id", ondelete="CASCADE"), primary_key=True
    )
    processed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
