"""Content library: items, their reviewed versions, review history, and subscribe-message credits."""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from cdp.db import BigIntPK, JSONType, UTCDateTime, db, utcnow

# What a piece of content is (and so which channel can carry it).
CONTENT_KINDS = (
    "wechat_template",  # OA template message: template id + field mapping (service only)
    "miniprogram_subscribe",  # mini-program subscribe message: needs a per-template credit
    "sms",  # SMS template
    "article",  # rich text, sanitised HTML
    "miniprogram_link",  # a mini-program page link
    "webhook",  # a JSON payload posted to a partner system
)
VERSION_STATES = ("draft", "submitted", "approved", "rejected", "expired", "withdrawn")
AUDIENCES = ("patient", "hcp", "both")
PRODUCT_CLASSES = ("rx", "otc", "non_drug")
CATEGORIES = ("service", "marketing")


class ContentItem(db.Model):
    __tablename__ = "content_items"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    kind: Mapped[str] = mapped_column(sa.String(32))
    created_by_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ContentVersion(db.Model):
    """One version of an item; frozen (and hashed) once approved, edits make a new draft."""

    __tablename__ = "content_versions"

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(
        sa.ForeignKey("content_items.id", ondelete="CASCADE"), index=True
    )
    number: Mapped[int] = mapped_column(sa.Integer)
    status: Mapped[str] = mapped_column(sa.String(16), default="draft", index=True)
    # Kind-specific body (template strings), see cdp.content.schemas.
    body: Mapped[dict] = mapped_column(JSONType, default=dict)
    audience: Mapped[str] = mapped_column(sa.String(16), default="patient")
    products: Mapped[list] = mapped_column(JSONType, default=list)
    product_class: Mapped[str] = mapped_column(sa.String(16), default="non_drug")
    therapeutic_area: Mapped[str] = mapped_column(sa.String(100), default="")
    category: Mapped[str] = mapped_column(sa.String(16), default="service")
    expires_on: Mapped[date | None] = mapped_column(sa.Date)
    # The MLR number printed on the material.
    approval_code: Mapped[str | None] = mapped_column(sa.String(64))
    # Variables the templates use, e.g. ["context.refill_date", "profile.name"].
    variables: Mapped[list] = mapped_column(JSONType, default=list)
    author_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    submitted_by_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reviewed_by_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    # SHA-256 of the approved content: a version changed after approval no longer matches.
    approved_hash: Mapped[str | None] = mapped_column(sa.String(64))

    __table_args__ = (
        sa.UniqueConstraint("item_id", "number", name="uq_content_versions_item_number"),
    )


class ContentTransition(db.Model):
    """Review history: every status change with who made it and the reviewer's comment."""

    __tablename__ = "content_transitions"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    version_id: Mapped[int] = mapped_column(
        sa.ForeignKey("content_versions.id", ondelete="CASCADE"), index=True
    )
    from_status: Mapped[str | None] = mapped_column(sa.String(16))
    to_status: Mapped[str] = mapped_column(sa.String(16))
    actor_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    comment: Mapped[str] = mapped_column(sa.Text, default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SubscribeCredit(db.Model):
    """Mini-program subscribe-message credits of a profile per template (accept +1, send -1)."""

    __tablename__ = "subscribe_credits"

    profile_id: Mapped[int] = mapped_column(
        sa.ForeignKey("profiles.id", ondelete="CASCADE"), primary_key=True
    )
    template_id: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    credits: Mapped[int] = mapped_column(sa.Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
