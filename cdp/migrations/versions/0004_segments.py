"""segments and their membership history

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade():
    op.create_table(
        "segments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("definition", JSON, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("realtime", sa.Boolean(), nullable=False),
        sa.Column("refresh_minutes", sa.Integer(), nullable=True),
        sa.Column("health_data", sa.Boolean(), nullable=False),
        sa.Column("time_based", sa.Boolean(), nullable=False),
        sa.Column("depends_on", JSON, nullable=False),
        sa.Column("references", JSON, nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_refresh", JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.CheckConstraint(
            "status IN ('active', 'archived')", name=op.f("ck_segments_status_known")
        ),
        sa.ForeignKeyConstraint(
            ["created_by_id"],
            ["users.id"],
            name=op.f("fk_segments_created_by_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segments")),
    )
    with op.batch_alter_table("segments", schema=None) as batch_op:
        batch_op.create_index("ix_segments_status_name", ["status", "name"], unique=False)

    op.create_table(
        "segment_memberships",
        sa.Column("id", BIGINT_PK, nullable=False),
        sa.Column("segment_id", sa.Integer(), nullable=False),
        sa.Column("profile_id", BIGINT_PK, nullable=False),
        sa.Column("entered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("exited_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["profile_id"],
            ["profiles.id"],
            name=op.f("fk_segment_memberships_profile_id_profiles"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["segment_id"],
            ["segments.id"],
            name=op.f("fk_segment_memberships_segment_id_segments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segment_memberships")),
    )
    with op.batch_alter_table("segment_memberships", schema=None) as batch_op:
        batch_op.create_index(
            "uq_segment_memberships_open",
            ["segment_id", "profile_id"],
            unique=True,
            sqlite_where=sa.text("exited_at IS NULL"),
            postgresql_where=sa.text("exited_at IS NULL"),
        )
        batch_op.create_index("ix_segment_memberships_profile", ["profile_id"], unique=False)
        batch_op.create_index(
            "ix_segment_memberships_entered", ["segment_id", "entered_at"], unique=False
        )
        batch_op.create_index(
            "ix_segment_memberships_exited", ["segment_id", "exited_at"], unique=False
        )
    # Covering index for segment event scans: (name, time window) -> profile ids.
    op.create_index(
        "ix_events_name_timestamp_profile", "events", ["name", "timestamp", "profile_id"]
    )


def downgrade():
    op.drop_index("ix_events_name_timestamp_profile", table_name="events")
    with op.batch_alter_table("segment_memberships", schema=None) as batch_op:
        batch_op.drop_index("ix_segment_memberships_exited")
        batch_op.drop_index("ix_segment_memberships_entered")
        batch_op.drop_index("ix_segment_memberships_profile")
        batch_op.drop_index("uq_segment_memberships_open")
    op.drop_table("segment_memberships")
    with op.batch_alter_table("segments", schema=None) as batch_op:
        batch_op.drop_index("ix_segments_status_name")
    op.drop_table("segments")
    # Segment events come from the internal source the segments package creates on first use.
    op.execute("DELETE FROM events WHERE source_id = 'src_internal'")
    op.execute("DELETE FROM outbox_batches WHERE source_id = 'src_internal'")
    op.execute("DELETE FROM sources WHERE id = 'src_internal'")
