"""The identity graph's history: merges (undoable), refused merges, and junk identifier values."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from cdp.db import BigIntPK, JSONType, UTCDateTime, db, utcnow


class Merge(db.Model):
    """Profile ``merged_id`` folded into ``survivor_id``; enough is kept to undo it exactly."""

    __tablename__ = "merges"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    survivor_id: Mapped[int] = mapped_column(
        sa.ForeignKey("profiles.id", ondelete="CASCADE"), index=True
    )
    merged_id: Mapped[int] = mapped_column(
        sa.ForeignKey("profiles.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    source_id: Mapped[str | None] = mapped_column(sa.ForeignKey("sources.id", ondelete="SET NULL"))
    message_id: Mapped[str | None] = mapped_column(sa.String(100))
    # The identifier (type[:namespace]) that linked the two, never its value.
    linked_by: Mapped[list] = mapped_column(JSONType, default=list)
    moved_identity_ids: Mapped[list] = mapped_column(JSONType, default=list)
    moved_event_ids: Mapped[list] = mapped_column(JSONType, default=list)
    moved_consent_ids: Mapped[list] = mapped_column(JSONType, default=list, server_default="[]")
    # Traits (plain and encrypted) of both profiles before the merge, to restore on undo.
    survivor_before: Mapped[dict] = mapped_column(JSONType, default=dict)
    survivor_pii_before: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    undone_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    undone_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))


class IdentityConflict(db.Model):
    """A merge the rules refused (different kinds, or a per-type limit), kept for review."""

    __tablename__ = "identity_conflicts"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    profile_id: Mapped[int] = mapped_column(sa.ForeignKey("profiles.id", ondelete="CASCADE"))
    other_profile_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("profiles.id", ondelete="CASCADE")
    )
    identifier_type: Mapped[str] = mapped_column(sa.String(100))
    reason: Mapped[str] = mapped_column(sa.String(300))
    source_id: Mapped[str | None] = mapped_column(sa.ForeignKey("sources.id", ondelete="SET NULL"))
    message_id: Mapped[str | None] = mapped_column(sa.String(100))


class BlockedIdentifier(db.Model):
    """An identifier value that never links people (test phones, shared till cards, 'null')."""

    __tablename__ = "blocked_identifiers"

    id: Mapped[int] = mapped_column(primary_key=True)
    # None: every type. The pattern is matched against the normalised value.
    identifier_type: Mapped[str | None] = mapped_column(sa.String(32))
    pattern: Mapped[str] = mapped_column(sa.String(200))
    is_regex: Mapped[bool] = mapped_column(default=False)
    note: Mapped[str] = mapped_column(sa.String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
