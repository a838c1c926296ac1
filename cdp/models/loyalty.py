"""Loyalty: partner pharmacies (stores, keys, members, syncs), coupons, and the points ledger.

Money-like state lives here, so the invariants are in the schema as well as in code:
a campaign never issues past its budget, a points balance or lot never goes negative,
ledger entries are never updated (a trigger in the migration refuses it), and every
idempotency key is unique in its scope.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from cdp.db import BigIntPK, JSONType, UTCDateTime, db, utcnow

PARTNER_STATUSES = ("active", "suspended")
SYNC_STATUSES = ("queued", "running", "succeeded", "failed")
PRODUCT_CLASSES = ("rx", "otc_a", "otc_b", "non_drug")
CAMPAIGN_TYPES = ("amount_off", "percent_off", "gift")
CAMPAIGN_STATUSES = ("draft", "active", "paused", "ended")
CAMPAIGN_AUDIENCES = ("patient", "hcp")
COUPON_STATUSES = ("issued", "redeemed", "expired")
ENTRY_KINDS = ("earn", "burn", "expire", "adjust", "reverse")


def _known(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Partner(db.Model):
    """A pharmacy chain: its code namespaces its members' ``pharmacy_member`` identifiers."""

    __tablename__ = "loyalty_partners"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(sa.String(32), unique=True)
    name: Mapped[str] = mapped_column(sa.String(120))
    # The source (kind "pharmacy") member syncs are ingested through.
    source_id: Mapped[str] = mapped_column(sa.ForeignKey("sources.id", ondelete="RESTRICT"))
    status: Mapped[str] = mapped_column(sa.String(16), default="active")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL")
    )

    __table_args__ = (sa.CheckConstraint(_known("status", PARTNER_STATUSES), name="status_known"),)


class PartnerKey(db.Model):
    """A partner API key: a lookup prefix and a SHA-256 only; the key is shown once."""

    __tablename__ = "loyalty_partner_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    partner_id: Mapped[int] = mapped_column(
        sa.ForeignKey("loyalty_partners.id", ondelete="CASCADE"), index=True
    )
    prefix: Mapped[str] = mapped_column(sa.String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Store(db.Model):
    __tablename__ = "loyalty_stores"

    id: Mapped[int] = mapped_column(primary_key=True)
    partner_id: Mapped[int] = mapped_column(
        sa.ForeignKey("loyalty_partners.id", ondelete="CASCADE")
    )
    code: Mapped[str] = mapped_column(sa.String(64))
    name: Mapped[str] = mapped_column(sa.String(200))
    city: Mapped[str] = mapped_column(sa.String(64), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (sa.UniqueConstraint("partner_id", "code", name="uq_loyalty_stores_code"),)


class Member(db.Model):
    """A partner's member card; personal data lives on the profile, never here.

    ``row_digest`` is a keyed hash of the last synced row, so a row sent again unchanged
    is recognised without storing its contents.
    """

    __tablename__ = "loyalty_members"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    partner_id: Mapped[int] = mapped_column(
        sa.ForeignKey("loyalty_partners.id", ondelete="CASCADE")
    )
    card_no: Mapped[str] = mapped_column(sa.String(64))
    # The profile the card resolved to at the last sync (merges move the identifier on).
    profile_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("profiles.id", ondelete="SET NULL"), index=True
    )
    store_code: Mapped[str | None] = mapped_column(sa.String(64))
    joined_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    consents: Mapped[dict] = mapped_column(JSONType, default=dict)
    row_digest: Mapped[str] = mapped_column(sa.String(64))
    last_sync_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("loyalty_member_syncs.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (sa.UniqueConstraint("partner_id", "card_no", name="uq_loyalty_members_card"),)


class MemberSync(db.Model):
    """One member upload: counts, per-row outcome, and the rejected rows (encrypted)."""

    __tablename__ = "loyalty_member_syncs"

    id: Mapped[int] = mapped_column(primary_key=True)
    partner_id: Mapped[int] = mapped_column(
        sa.ForeignKey("loyalty_partners.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(sa.String(16), default="queued")
    file_format: Mapped[str] = mapped_column(sa.String(8), default="json")
    total: Mapped[int] = mapped_column(default=0)
    processed: Mapped[int] = mapped_column(default=0)
    created: Mapped[int] = mapped_column(default=0)
    updated: Mapped[int] = mapped_column(default=0)
    unchanged: Mapped[int] = mapped_column(default=0)
    rejected: Mapped[int] = mapped_column(default=0)
    # [[status, reason or null], ...] by row index: no personal data.
    results: Mapped[list] = mapped_column(JSONType, default=list)
    # Rows still to process (background syncs) and rejected rows, AEAD-encrypted JSON.
    rows_encrypted: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    rejected_encrypted: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    job_id: Mapped[int | None] = mapped_column(sa.ForeignKey("job_runs.id", ondelete="SET NULL"))
    error: Mapped[str] = mapped_column(sa.Text, default="")
    actor: Mapped[str | None] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (sa.CheckConstraint(_known("status", SYNC_STATUSES), name="status_known"),)


class Product(db.Model):
    """The product catalogue coupons and points rules check (批准文号 → Rx class)."""

    __tablename__ = "loyalty_products"

    code: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    product_class: Mapped[str] = mapped_column(sa.String(16))
    approval_number: Mapped[str | None] = mapped_column(sa.String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        sa.CheckConstraint(_known("product_class", PRODUCT_CLASSES), name="class_known"),
    )


class CouponCampaign(db.Model):
    """What a coupon is worth, where and for whom, and how many may be issued.

    ``value`` is in fen for amount_off and gift (the gift's cost) and in percent for
    percent_off. ``issued_count`` is raised by a guarded UPDATE, never past ``budget``.
    """

    __tablename__ = "loyalty_coupon_campaigns"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    type: Mapped[str] = mapped_column(sa.String(16))
    value: Mapped[int] = mapped_column(sa.BigInteger)
    min_spend: Mapped[int] = mapped_column(sa.BigInteger, default=0)  # fen
    audience: Mapped[str] = mapped_column(sa.String(16), default="patient")
    products: Mapped[list] = mapped_column(JSONType, default=list)
    partner_ids: Mapped[list] = mapped_column(JSONType, default=list)  # empty: every partner
    store_codes: Mapped[list] = mapped_column(JSONType, default=list)  # empty: every store
    valid_from: Mapped[datetime | None] = mapped_column(UTCDateTime)
    valid_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    valid_days: Mapped[int | None] = mapped_column()
    budget: Mapped[int] = mapped_column()
    per_profile_limit: Mapped[int] = mapped_column(default=1)
    issued_count: Mapped[int] = mapped_column(default=0)
    status: Mapped[str] = mapped_column(sa.String(16), default="draft")
    created_by_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        sa.CheckConstraint(_known("type", CAMPAIGN_TYPES), name="type_known"),
        sa.CheckConstraint(_known("status", CAMPAIGN_STATUSES), name="status_known"),
        sa.CheckConstraint(_known("audience", CAMPAIGN_AUDIENCES), name="audience_known"),
        sa.CheckConstraint("issued_count >= 0 AND issued_count <= budget", name="within_budget"),
    )


class Coupon(db.Model):
    __tablename__ = "loyalty_coupons"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(
        sa.ForeignKey("loyalty_coupon_campaigns.id", ondelete="CASCADE")
    )
    profile_id: Mapped[int] = mapped_column(
        sa.ForeignKey("profiles.id", ondelete="CASCADE"), index=True
    )
    code: Mapped[str] = mapped_column(sa.String(16), unique=True)
    issue_key: Mapped[str] = mapped_column(sa.String(128))
    status: Mapped[str] = mapped_column(sa.String(16), default="issued")
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    valid_from: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    redeemed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        sa.UniqueConstraint("campaign_id", "issue_key", name="uq_loyalty_coupons_issue_key"),
        sa.CheckConstraint(_known("status", COUPON_STATUSES), name="status_known"),
        sa.Index("ix_loyalty_coupons_campaign_profile", "campaign_id", "profile_id"),
        sa.Index("ix_loyalty_coupons_status_expires", "status", "expires_at"),
    )


class Redemption(db.Model):
    """A coupon used at a store; voiding keeps the row (``voided_at``) and frees the coupon."""

    __tablename__ = "loyalty_redemptions"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    coupon_id: Mapped[int] = mapped_column(
        sa.ForeignKey("loyalty_coupons.id", ondelete="CASCADE"), index=True
    )
    campaign_id: Mapped[int] = mapped_column(
        sa.ForeignKey("loyalty_coupon_campaigns.id", ondelete="CASCADE"), index=True
    )
    partner_id: Mapped[int] = mapped_column(
        sa.ForeignKey("loyalty_partners.id", ondelete="CASCADE")
    )
    store_code: Mapped[str] = mapped_column(sa.String(64))
    order_id: Mapped[str] = mapped_column(sa.String(64))
    amount: Mapped[int] = mapped_column(sa.BigInteger, default=0)  # fen
    discount: Mapped[int] = mapped_column(sa.BigInteger, default=0)  # fen: the campaign's cost
    redeemed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    voided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    void_reason: Mapped[str] = mapped_column(sa.String(200), default="")

    __table_args__ = (sa.Index("ix_loyalty_redemptions_partner_id", "partner_id", "id"),)


class PointAccount(db.Model):
    """A profile's points: the balance row that burns lock (``SELECT … FOR UPDATE``)."""

    __tablename__ = "loyalty_point_accounts"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    profile_id: Mapped[int] = mapped_column(
        sa.ForeignKey("profiles.id", ondelete="CASCADE"), unique=True
    )
    balance: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    # Set when the profile was merged away: balance and lots moved to that account.
    merged_into_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("loyalty_point_accounts.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (sa.CheckConstraint("balance >= 0", name="balance_not_negative"),)


class PointEntry(db.Model):
    """One ledger line, never updated or deleted by the application.

    Foreign keys into this table cascade (never SET NULL): the append-only trigger would
    refuse the UPDATE a SET NULL makes, and erasing a person must still delete their lines.
    """

    __tablename__ = "loyalty_point_entries"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    account_id: Mapped[int] = mapped_column(
        sa.ForeignKey("loyalty_point_accounts.id", ondelete="CASCADE")
    )
    kind: Mapped[str] = mapped_column(sa.String(16))
    points: Mapped[int] = mapped_column(sa.BigInteger)  # signed
    balance_after: Mapped[int] = mapped_column(sa.BigInteger)
    # Idempotency: "partner:<id>", "staff" or "journey"; the key is unique within its scope.
    scope: Mapped[str] = mapped_column(sa.String(32))
    idempotency_key: Mapped[str] = mapped_column(sa.String(128))
    partner_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("loyalty_partners.id", ondelete="RESTRICT")
    )
    store_code: Mapped[str | None] = mapped_column(sa.String(64))
    order_id: Mapped[str | None] = mapped_column(sa.String(64))
    rule: Mapped[str | None] = mapped_column(sa.String(64))
    amount: Mapped[int | None] = mapped_column(sa.BigInteger)  # fen spent (purchase earns)
    reason: Mapped[str] = mapped_column(sa.String(200), default="")
    reverses_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("loyalty_point_entries.id", ondelete="CASCADE")
    )
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    actor: Mapped[str | None] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        sa.UniqueConstraint("scope", "idempotency_key", name="uq_loyalty_point_entries_key"),
        sa.CheckConstraint(_known("kind", ENTRY_KINDS), name="kind_known"),
        sa.CheckConstraint("balance_after >= 0", name="balance_not_negative"),
        sa.Index("ix_loyalty_point_entries_account", "account_id", "id"),
        sa.Index("ix_loyalty_point_entries_partner_order", "partner_id", "order_id"),
    )


class PointLot(db.Model):
    """Points of one earn still unspent, burnt and expired first-in first-out."""

    __tablename__ = "loyalty_point_lots"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    account_id: Mapped[int] = mapped_column(
        sa.ForeignKey("loyalty_point_accounts.id", ondelete="CASCADE")
    )
    entry_id: Mapped[int] = mapped_column(
        sa.ForeignKey("loyalty_point_entries.id", ondelete="CASCADE")
    )
    remaining: Mapped[int] = mapped_column(sa.BigInteger)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        sa.CheckConstraint("remaining >= 0", name="remaining_not_negative"),
        sa.Index("ix_loyalty_point_lots_account", "account_id", "expires_at"),
        sa.Index("ix_loyalty_point_lots_expires", "expires_at"),
    )


class MemberChange(db.Model):
    """What changed on our side for a partner's member, for the partner's incremental pull.

    ``tx_seq`` is the writing transaction's id on PostgreSQL (0 on SQLite, whose single
    writer commits in id order); readers only return rows of transactions older than every
    transaction still running, so a cursor never skips a late commit.
    """

    __tablename__ = "loyalty_member_changes"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    partner_id: Mapped[int] = mapped_column(
        sa.ForeignKey("loyalty_partners.id", ondelete="CASCADE")
    )
    card_no: Mapped[str] = mapped_column(sa.String(64))
    kind: Mapped[str] = mapped_column(sa.String(32))
    data: Mapped[dict] = mapped_column(JSONType, default=dict)
    tx_seq: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (sa.Index("ix_loyalty_member_changes_feed", "partner_id", "tx_seq", "id"),)
