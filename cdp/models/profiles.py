"""Unified profiles (patients and doctors) and the typed identifiers that resolve to them."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from cdp.db import BigIntPK, JSONType, UTCDateTime, db, utcnow

PROFILE_KINDS = ("patient", "hcp")


class Profile(db.Model):
    __tablename__ = "profiles"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(16))
    # Segmentable, non-identifying traits (gender, city, birth_date, tier ...).
    traits: Mapped[dict] = mapped_column(JSONType, default=dict)
    # Identifying traits (name, address, id numbers) as one AEAD-encrypted JSON blob.
    pii_encrypted: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    # Keyed blind index of the full name, so people can be found by exact name without clear text.
    name_index: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    # Event time each trait (PII ones included, by key only) was last set: latest wins.
    trait_times: Mapped[dict] = mapped_column(JSONType, default=dict, server_default="{}")
    merged_into_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("profiles.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    first_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    identities: Mapped[list[Identity]] = relationship(
        back_populates="profile", cascade="all, delete-orphan", passive_deletes=True
    )

    __table_args__ = (
        sa.CheckConstraint("kind IN ('patient', 'hcp')", name="kind_known"),
        sa.Index("ix_profiles_kind_id", "kind", "id"),
    )


class Identity(db.Model):
    """One identifier of a profile, e.g. ``wechat_openid:wx123 = o6_bm...``.

    ``value_index`` is the value itself for opaque ids and a keyed HMAC (blind
    index) for personal data such as phone numbers, whose value is kept only
    encrypted in ``value_encrypted``.
    """

    __tablename__ = "identities"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    profile_id: Mapped[int] = mapped_column(
        sa.ForeignKey("profiles.id", ondelete="CASCADE"), index=True
    )
    type: Mapped[str] = mapped_column(sa.String(32))
    namespace: Mapped[str] = mapped_column(sa.String(64), default="")
    value_index: Mapped[str] = mapped_column(sa.String(128))
    value_encrypted: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    source_id: Mapped[str | None] = mapped_column(sa.ForeignKey("sources.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    profile: Mapped[Profile] = relationship(back_populates="identities")

    __table_args__ = (
        sa.UniqueConstraint("type", "namespace", "value_index", name="uq_identities_value"),
    )
