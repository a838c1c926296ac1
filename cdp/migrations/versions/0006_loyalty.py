"""loyalty: partner pharmacies, stores, keys, members and syncs; coupons; points ledger

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# Ledger lines are append-only: the database refuses an UPDATE (a DELETE stays possible, so
# erasing a person under PIPL still cascades).
APPEND_ONLY_MESSAGE = "loyalty_point_entries is append-only"
PG_FUNCTION = f"""
CREATE FUNCTION loyalty_point_entries_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '{APPEND_ONLY_MESSAGE}';
END;
$$ LANGUAGE plpgsql
"""
PG_TRIGGER = """
CREATE TRIGGER loyalty_point_entries_no_update BEFORE UPDATE ON loyalty_point_entries
FOR EACH ROW EXECUTE FUNCTION loyalty_point_entries_append_only()
"""
SQLITE_TRIGGER = f"""
CREATE TRIGGER loyalty_point_entries_no_update BEFORE UPDATE ON loyalty_point_entries
BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE}'); END
"""


def upgrade():
    op.create_table(
        "loyalty_products",
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("product_class", sa.String(length=16), nullable=False),
        sa.Column("approval_number", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "product_class IN ('rx', 'otc_a', 'otc_b', 'non_drug')",
            name=op.f("ck_loyalty_products_class_known"),
        ),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_loyalty_products")),
    )
    op.create_table(
        "loyalty_coupon_campaigns",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.Column("min_spend", sa.BigInteger(), nullable=False),
        sa.Column("audience", sa.String(length=16), nullable=False),
        sa.Column("products", JSON, nullable=False),
        sa.Column("partner_ids", JSON, nullable=False),
        sa.Column("store_codes", JSON, nullable=False),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=True),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("valid_days", sa.Integer(), nullable=True),
        sa.Column("budget", sa.Integer(), nullable=False),
        sa.Column("per_profile_limit", sa.Integer(), nullable=False),
        sa.Column("issued_count", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "audience IN ('patient', 'hcp')",
            name=op.f("ck_loyalty_coupon_campaigns_audience_known"),
        ),
        sa.CheckConstraint(
            "status IN ('draft', 'active', 'paused', 'ended')",
            name=op.f("ck_loyalty_coupon_campaigns_status_known"),
        ),
        sa.CheckConstraint(
            "type IN ('amount_off', 'percent_off', 'gift')",
            name=op.f("ck_loyalty_coupon_campaigns_type_known"),
        ),
        sa.CheckConstraint(
            "issued_count >= 0 AND issued_count <= budget",
            name=op.f("ck_loyalty_coupon_campaigns_within_budget"),
        ),
        sa.ForeignKeyConstraint(
            ["created_by_id"],
            ["users.id"],
            name=op.f("fk_loyalty_coupon_campaigns_created_by_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_loyalty_coupon_campaigns")),
    )
    op.create_table(
        "loyalty_point_accounts",
        sa.Column("id", BIGINT_PK, nullable=False),
        sa.Column("profile_id", BIGINT_PK, nullable=False),
        sa.Column("balance", sa.BigInteger(), nullable=False),
        sa.Column("merged_into_id", BIGINT_PK, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "balance >= 0", name=op.f("ck_loyalty_point_accounts_balance_not_negative")
        ),
        sa.ForeignKeyConstraint(
            ["merged_into_id"],
            ["loyalty_point_accounts.id"],
            name=op.f("fk_loyalty_point_accounts_merged_into_id_loyalty_point_accounts"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["profile_id"],
            ["profiles.id"],
            name=op.f("fk_loyalty_point_accounts_profile_id_profiles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_loyalty_point_accounts")),
        sa.UniqueConstraint("profile_id", name=op.f("uq_loyalty_point_accounts_profile_id")),
    )
    op.create_table(
        "loyalty_coupons",
        sa.Column("id", BIGINT_PK, nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("profile_id", BIGINT_PK, nullable=False),
        sa.Column("code", sa.String(length=16), nullable=False),
        sa.Column("issue_key", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("redeemed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('issued', 'redeemed', 'expired')",
            name=op.f("ck_loyalty_coupons_status_known"),
        ),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["loyalty_coupon_campaigns.id"],
            name=op.f("fk_loyalty_coupons_campaign_id_loyalty_coupon_campaigns"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["profile_id"],
            ["profiles.id"],
            name=op.f("fk_loyalty_coupons_profile_id_profiles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_loyalty_coupons")),
        sa.UniqueConstraint("campaign_id", "issue_key", name="uq_loyalty_coupons_issue_key"),
        sa.UniqueConstraint("code", name=op.f("uq_loyalty_coupons_code")),
    )
    with op.batch_alter_table("loyalty_coupons", schema=None) as batch_op:
        batch_op.create_index(
            "ix_loyalty_coupons_campaign_profile", ["campaign_id", "profile_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_loyalty_coupons_profile_id"), ["profile_id"], unique=False
        )
        batch_op.create_index(
            "ix_loyalty_coupons_status_expires", ["status", "expires_at"], unique=False
        )

    op.create_table(
        "loyalty_partners",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("source_id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.CheckConstraint(
            "status IN ('active', 'suspended')", name=op.f("ck_loyalty_partners_status_known")
        ),
        sa.ForeignKeyConstraint(
            ["created_by_id"],
            ["users.id"],
            name=op.f("fk_loyalty_partners_created_by_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["source_id"],
            ["sources.id"],
            name=op.f("fk_loyalty_partners_source_id_sources"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_loyalty_partners")),
        sa.UniqueConstraint("code", name=op.f("uq_loyalty_partners_code")),
    )
    op.create_table(
        "loyalty_member_changes",
        sa.Column("id", BIGINT_PK, nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.Column("card_no", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("data", JSON, nullable=False),
        sa.Column("tx_seq", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["loyalty_partners.id"],
            name=op.f("fk_loyalty_member_changes_partner_id_loyalty_partners"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_loyalty_member_changes")),
    )
    with op.batch_alter_table("loyalty_member_changes", schema=None) as batch_op:
        batch_op.create_index(
            "ix_loyalty_member_changes_feed", ["partner_id", "tx_seq", "id"], unique=False
        )

    op.create_table(
        "loyalty_member_syncs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("file_format", sa.String(length=8), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("processed", sa.Integer(), nullable=False),
        sa.Column("created", sa.Integer(), nullable=False),
        sa.Column("updated", sa.Integer(), nullable=False),
        sa.Column("unchanged", sa.Integer(), nullable=False),
        sa.Column("rejected", sa.Integer(), nullable=False),
        sa.Column("results", JSON, nullable=False),
        sa.Column("rows_encrypted", sa.LargeBinary(), nullable=True),
        sa.Column("rejected_encrypted", sa.LargeBinary(), nullable=True),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed')",
            name=op.f("ck_loyalty_member_syncs_status_known"),
        ),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["job_runs.id"],
            name=op.f("fk_loyalty_member_syncs_job_id_job_runs"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["loyalty_partners.id"],
            name=op.f("fk_loyalty_member_syncs_partner_id_loyalty_partners"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_loyalty_member_syncs")),
    )
    with op.batch_alter_table("loyalty_member_syncs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_loyalty_member_syncs_partner_id"), ["partner_id"], unique=False
        )

    op.create_table(
        "loyalty_partner_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["loyalty_partners.id"],
            name=op.f("fk_loyalty_partner_keys_partner_id_loyalty_partners"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_loyalty_partner_keys")),
        sa.UniqueConstraint("prefix", name=op.f("uq_loyalty_partner_keys_prefix")),
    )
    with op.batch_alter_table("loyalty_partner_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_loyalty_partner_keys_partner_id"), ["partner_id"], unique=False
        )

    op.create_table(
        "loyalty_point_entries",
        sa.Column("id", BIGINT_PK, nullable=False),
        sa.Column("account_id", BIGINT_PK, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("balance_after", sa.BigInteger(), nullable=False),
        sa.Column("scope", sa.String(length=32), nullable=False),
        sa.Column("idempotency_key", sa.String(length=128), nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=True),
        sa.Column("store_code", sa.String(length=64), nullable=True),
        sa.Column("order_id", sa.String(length=64), nullable=True),
        sa.Column("rule", sa.String(length=64), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("reverses_id", BIGINT_PK, nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("actor", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('earn', 'burn', 'expire', 'adjust', 'reverse')",
            name=op.f("ck_loyalty_point_entries_kind_known"),
        ),
        sa.CheckConstraint(
            "balance_after >= 0", name=op.f("ck_loyalty_point_entries_balance_not_negative")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["loyalty_point_accounts.id"],
            name=op.f("fk_loyalty_point_entries_account_id_loyalty_point_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["loyalty_partners.id"],
            name=op.f("fk_loyalty_point_entries_partner_id_loyalty_partners"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["reverses_id"],
            ["loyalty_point_entries.id"],
            name=op.f("fk_loyalty_point_entries_reverses_id_loyalty_point_entries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_loyalty_point_entries")),
        sa.UniqueConstraint("scope", "idempotency_key", name="uq_loyalty_point_entries_key"),
    )
    with op.batch_alter_table("loyalty_point_entries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_loyalty_point_entries_account", ["account_id", "id"], unique=False
        )
        batch_op.create_index(
            "ix_loyalty_point_entries_partner_order", ["partner_id", "order_id"], unique=False
        )

    op.create_table(
        "loyalty_redemptions",
        sa.Column("id", BIGINT_PK, nullable=False),
        sa.Column("coupon_id", BIGINT_PK, nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.Column("store_code", sa.String(length=64), nullable=False),
        sa.Column("order_id", sa.String(length=64), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("discount", sa.BigInteger(), nullable=False),
        sa.Column("redeemed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("voided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("void_reason", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["loyalty_coupon_campaigns.id"],
            name=op.f("fk_loyalty_redemptions_campaign_id_loyalty_coupon_campaigns"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["coupon_id"],
            ["loyalty_coupons.id"],
            name=op.f("fk_loyalty_redemptions_coupon_id_loyalty_coupons"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["loyalty_partners.id"],
            name=op.f("fk_loyalty_redemptions_partner_id_loyalty_partners"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_loyalty_redemptions")),
    )
    with op.batch_alter_table("loyalty_redemptions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_loyalty_redemptions_campaign_id"), ["campaign_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_loyalty_redemptions_coupon_id"), ["coupon_id"], unique=False
        )
        batch_op.create_index(
            "ix_loyalty_redemptions_partner_id", ["partner_id", "id"], unique=False
        )

    op.create_table(
        "loyalty_stores",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("city", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["loyalty_partners.id"],
            name=op.f("fk_loyalty_stores_partner_id_loyalty_partners"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_loyalty_stores")),
        sa.UniqueConstraint("partner_id", "code", name="uq_loyalty_stores_code"),
    )
    op.create_table(
        "loyalty_members",
        sa.Column("id", BIGINT_PK, nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.Column("card_no", sa.String(length=64), nullable=False),
        sa.Column("profile_id", BIGINT_PK, nullable=True),
        sa.Column("store_code", sa.String(length=64), nullable=True),
        sa.Column("joined_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("consents", JSON, nullable=False),
        sa.Column("row_digest", sa.String(length=64), nullable=False),
        sa.Column("last_sync_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["last_sync_id"],
            ["loyalty_member_syncs.id"],
            name=op.f("fk_loyalty_members_last_sync_id_loyalty_member_syncs"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["loyalty_partners.id"],
            name=op.f("fk_loyalty_members_partner_id_loyalty_partners"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["profile_id"],
            ["profiles.id"],
            name=op.f("fk_loyalty_members_profile_id_profiles"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_loyalty_members")),
        sa.UniqueConstraint("partner_id", "card_no", name="uq_loyalty_members_card"),
    )
    with op.batch_alter_table("loyalty_members", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_loyalty_members_profile_id"), ["profile_id"], unique=False
        )

    op.create_table(
        "loyalty_point_lots",
        sa.Column("id", BIGINT_PK, nullable=False),
        sa.Column("account_id", BIGINT_PK, nullable=False),
        sa.Column("entry_id", BIGINT_PK, nullable=False),
        sa.Column("remaining", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "remaining >= 0", name=op.f("ck_loyalty_point_lots_remaining_not_negative")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["loyalty_point_accounts.id"],
            name=op.f("fk_loyalty_point_lots_account_id_loyalty_point_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["entry_id"],
            ["loyalty_point_entries.id"],
            name=op.f("fk_loyalty_point_lots_entry_id_loyalty_point_entries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_loyalty_point_lots")),
    )
    with op.batch_alter_table("loyalty_point_lots", schema=None) as batch_op:
        batch_op.create_index(
            "ix_loyalty_point_lots_account", ["account_id", "expires_at"], unique=False
        )
        batch_op.create_index("ix_loyalty_point_lots_expires", ["expires_at"], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_FUNCTION)
        op.execute(PG_TRIGGER)
    else:
        op.execute(SQLITE_TRIGGER)


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "DROP TRIGGER IF EXISTS loyalty_point_entries_no_update ON loyalty_point_entries"
        )
        op.execute("DROP FUNCTION IF EXISTS loyalty_point_entries_append_only()")
    else:
        op.execute("DROP TRIGGER IF EXISTS loyalty_point_entries_no_update")
    op.drop_table("loyalty_point_lots")
    op.drop_table("loyalty_members")
    op.drop_table("loyalty_stores")
    op.drop_table("loyalty_redemptions")
    op.drop_table("loyalty_point_entries")
    op.drop_table("loyalty_partner_keys")
    op.drop_table("loyalty_member_syncs")
    op.drop_table("loyalty_member_changes")
    op.drop_table("loyalty_partners")
    op.drop_table("loyalty_coupons")
    op.drop_table("loyalty_point_accounts")
    op.drop_table("loyalty_coupon_campaigns")
    op.drop_table("loyalty_products")
