"""Consent: a history of grants and withdrawals per profile, purpose and channel, plus the current state."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from cdp.db import BigIntPK, JSONType, UTCDateTime, db, utcnow

# marketing: promotional messages; health_data: processing medicine purchases and diagnoses
# (sensitive under PIPL, separate consent); third_party_sharing: sharing with partner
# pharmacies; automated_marketing: personalised/automated marketing (PIPL Art. 24 refusal).
# guardian: a parent's or guardian's consent for a person under 14 (PIPL Art. 31).
PURPOSES = ("marketing", "health_data", "third_party_sharing", "automated_marketing", "guardian")
# "*" is for purposes that are not tied to one channel.
CHANNELS = ("wechat", "miniprogram", "sms", "phone", "email", "*")
STATUSES = ("granted", "withdrawn")


class ConsentRecord(db.Model):
    """One grant or withdrawal, never updated: the evidence trail."""

    __tablename__ = "consent_records"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    profile_id: Mapped[int] = mapped_column(
        sa.ForeignKey("profiles.id", ondelete="CASCADE"), index=True
    )
    purpose: Mapped[str] = mapped_column(sa.String(32))
    channel: Mapped[str] = mapped_column(sa.String(16))
    status: Mapped[str] = mapped_column(sa.String(16))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    source_id: Mapped[str | None] = mapped_column(sa.ForeignKey("sources.id", ondelete="SET NULL"))
    # e.g. {"policy_version": "2026-06", "message_id": "...", "event": "unsubscribe"}
    evidence: Mapped[dict] = mapped_column(JSONType, default=dict)
    actor: Mapped[str | None] = mapped_column(sa.String(64))


class ConsentState(db.Model):
    """The current answer per (profile, purpose, channel): what sends and segments check."""

    __tablename__ = "consent_state"

    profile_id: Mapped[int] = mapped_column(
        sa.ForeignKey("profiles.id", ondelete="CASCADE"), primary_key=True
    )
    purpose: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    channel: Mapped[str] = mapped_column(sa.String(16), primary_key=True)
    status: Mapped[str] = mapped_column(sa.String(16))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    record_id: Mapped[int] = mapped_column(sa.ForeignKey("consent_records.id", ondelete="CASCADE"))

    __table_args__ = (sa.Index("ix_consent_state_purpose_channel", "purpose", "channel", "status"),)
