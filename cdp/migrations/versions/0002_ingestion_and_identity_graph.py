"""ingestion and identity graph: violations, outbox, merges, conflicts, identifier block list

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 11:50:36.091147
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "blocked_identifiers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("identifier_type", sa.String(length=32), nullable=True),
        sa.Column("pattern", sa.String(length=200), nullable=False),
        sa.Column("is_regex", sa.Boolean(), nullable=False),
        sa.Column("note", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_blocked_identifiers")),
    )
    op.create_table(
        "identity_conflicts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "profile_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "other_profile_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("identifier_type", sa.String(length=100), nullable=False),
        sa.Column("reason", sa.String(length=300), nullable=False),
        sa.Column("source_id", sa.String(length=32), nullable=True),
        sa.Column("message_id", sa.String(length=100), nullable=True),
        sa.ForeignKeyConstraint(
            ["other_profile_id"],
            ["profiles.id"],
            name=op.f("fk_identity_conflicts_other_profile_id_profiles"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["profile_id"],
            ["profiles.id"],
            name=op.f("fk_identity_conflicts_profile_id_profiles"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["source_id"],
            ["sources.id"],
            name=op.f("fk_identity_conflicts_source_id_sources"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identity_conflicts")),
    )
    op.create_table(
        "merges",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "survivor_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "merged_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source_id", sa.String(length=32), nullable=True),
        sa.Column("message_id", sa.String(length=100), nullable=True),
        sa.Column(
            "linked_by",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "moved_identity_ids",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "moved_event_ids",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "moved_consent_ids",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            server_default="[]",
            nullable=False,
        ),
        sa.Column(
            "survivor_before",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("survivor_pii_before", sa.LargeBinary(), nullable=True),
        sa.Column("undone_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("undone_by_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["merged_id"],
            ["profiles.id"],
            name=op.f("fk_merges_merged_id_profiles"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["source_id"],
            ["sources.id"],
            name=op.f("fk_merges_source_id_sources"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["survivor_id"],
            ["profiles.id"],
            name=op.f("fk_merges_survivor_id_profiles"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["undone_by_id"],
            ["users.id"],
            name=op.f("fk_merges_undone_by_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_merges")),
    )
    with op.batch_alter_table("merges", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_merges_merged_id"), ["merged_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_merges_survivor_id"), ["survivor_id"], unique=False)

    op.create_table(
        "outbox_batches",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("source_id", sa.String(length=32), nullable=False),
        sa.Column(
            "event_ids",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "profile_ids",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["source_id"],
            ["sources.id"],
            name=op.f("fk_outbox_batches_source_id_sources"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_batches")),
    )
    with op.batch_alter_table("outbox_batches", schema=None) as batch_op:
        batch_op.create_index(
            "ix_outbox_batches_pending", ["processed_at", "created_at"], unique=False
        )

    op.create_table(
        "violations",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("source_id", sa.String(length=32), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("message_id", sa.String(length=100), nullable=True),
        sa.Column("event_type", sa.String(length=16), nullable=True),
        sa.Column("event_name", sa.String(length=200), nullable=True),
        sa.Column("batch_index", sa.Integer(), nullable=True),
        sa.Column("field", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("rejected", sa.Boolean(), nullable=False),
        sa.Column("payload_encrypted", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(
            ["source_id"],
            ["sources.id"],
            name=op.f("fk_violations_source_id_sources"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_violations")),
    )
    with op.batch_alter_table("violations", schema=None) as batch_op:
        batch_op.create_index(
            "ix_violations_source_received", ["source_id", "received_at"], unique=False
        )

    with op.batch_alter_table("profiles", schema=None) as batch_op:
        batch_op.add_column(sa.Column("name_index", sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f("ix_profiles_name_index"), ["name_index"], unique=False)
        batch_op.add_column(
            sa.Column(
                "trait_times",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                server_default="{}",
                nullable=False,
            )
        )

    with op.batch_alter_table("sources", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "default_profile_kind",
                sa.String(length=16),
                server_default="patient",
                nullable=False,
            )
        )
        batch_op.add_column(
            sa.Column(
                "tracking_plan",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )
        batch_op.add_column(sa.Column("last_event_at", sa.DateTime(timezone=True), nullable=True))
    _seed_block_list()


# Values that SDKs, tills and test scripts send when they have nothing real: they must never
# link two people. Operators extend the list (`cdp identity block …`).
DEFAULT_BLOCKS = [
    (None, r"^(null|undefined|none|nil|nan|unknown|test|anonymous|-|0+|1+)$", True, "placeholders"),
    ("phone", r"^\+86(\d)\1{10}$", True, "one digit repeated"),
    ("phone", "+8613800138000", False, "well-known test number"),
    ("phone", "+8613912345678", False, "well-known test number"),
    ("phone", "+8618888888888", False, "shop counter number"),
    ("email", r"^(test|noreply|no-reply)@", True, "placeholder addresses"),
]


def _seed_block_list():
    table = sa.table(
        "blocked_identifiers",
        sa.column("identifier_type", sa.String),
        sa.column("pattern", sa.String),
        sa.column("is_regex", sa.Boolean),
        sa.column("note", sa.String),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    now = datetime.now(UTC)
    op.bulk_insert(
        table,
        [
            {"identifier_type": t, "pattern": p, "is_regex": r, "note": n, "created_at": now}
            for t, p, r, n in DEFAULT_BLOCKS
        ],
    )


def downgrade():
    with op.batch_alter_table("sources", schema=None) as batch_op:
        batch_op.drop_column("last_event_at")
        batch_op.drop_column("tracking_plan")
        batch_op.drop_column("default_profile_kind")

    with op.batch_alter_table("profiles", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_profiles_name_index"))
        batch_op.drop_column("name_index")
        batch_op.drop_column("trait_times")

    with op.batch_alter_table("violations", schema=None) as batch_op:
        batch_op.drop_index("ix_violations_source_received")

    op.drop_table("violations")
    with op.batch_alter_table("outbox_batches", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_batches_pending")

    op.drop_table("outbox_batches")
    with op.batch_alter_table("merges", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_merges_survivor_id"))
        batch_op.drop_index(batch_op.f("ix_merges_merged_id"))

    op.drop_table("merges")
    op.drop_table("identity_conflicts")
    op.drop_table("blocked_identifiers")
