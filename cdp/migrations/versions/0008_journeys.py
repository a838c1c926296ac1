"""journeys: definitions, published versions, instances, step log, delivery outbox

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade():
    op.create_table(
        "channel_unreachable",
        sa.Column("profile_id", BIGINT_PK, nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["profile_id"],
            ["profiles.id"],
            name=op.f("fk_channel_unreachable_profile_id_profiles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("profile_id", "channel", name=op.f("pk_channel_unreachable")),
    )
    op.create_table(
        "journeys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("draft", JSON, nullable=False),
        sa.Column("live_version", sa.Integer(), nullable=True),
        sa.Column("test_mode", sa.Boolean(), nullable=False),
        sa.Column("test_profile_ids", JSON, nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint(
            "status IN ('draft', 'published', 'paused', 'archived')",
            name=op.f("ck_journeys_status_known"),
        ),
        sa.ForeignKeyConstraint(
            ["created_by_id"],
            ["users.id"],
            name=op.f("fk_journeys_created_by_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_journeys")),
    )
    with op.batch_alter_table("journeys", schema=None) as batch_op:
        batch_op.create_index("ix_journeys_status", ["status"], unique=False)

    op.create_table(
        "journey_schedule_runs",
        sa.Column("journey_id", sa.Integer(), nullable=False),
        sa.Column("slot", sa.String(length=40), nullable=False),
        sa.Column("entered", sa.Integer(), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["journey_id"],
            ["journeys.id"],
            name=op.f("fk_journey_schedule_runs_journey_id_journeys"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("journey_id", "slot", name=op.f("pk_journey_schedule_runs")),
    )
    op.create_table(
        "journey_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("journey_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("definition", JSON, nullable=False),
        sa.Column("published_at", TS, nullable=False),
        sa.Column("published_by_id", sa.Integer(), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["journey_id"],
            ["journeys.id"],
            name=op.f("fk_journey_versions_journey_id_journeys"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["published_by_id"],
            ["users.id"],
            name=op.f("fk_journey_versions_published_by_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_journey_versions")),
        sa.UniqueConstraint(
            "journey_id", "number", name=op.f("uq_journey_versions_journey_id_number")
        ),
    )
    op.create_table(
        "journey_instances",
        sa.Column("id", BIGINT_PK, nullable=False),
        sa.Column("journey_id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("profile_id", BIGINT_PK, nullable=False),
        sa.Column("entry_key", sa.String(length=128), nullable=False),
        sa.Column("rotation", sa.Integer(), nullable=False),
        sa.Column("step_id", sa.String(length=40), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("next_run_at", TS, nullable=True),
        sa.Column("lease_until", TS, nullable=True),
        sa.Column("waiting_event", sa.String(length=200), nullable=True),
        sa.Column("step_entered_at", TS, nullable=False),
        sa.Column("entered_at", TS, nullable=False),
        sa.Column("ended_at", TS, nullable=True),
        sa.Column("exit_reason", sa.String(length=40), nullable=True),
        sa.Column("holdout", sa.Boolean(), nullable=False),
        sa.Column("test", sa.Boolean(), nullable=False),
        sa.Column("converted_at", TS, nullable=True),
        sa.Column("context", JSON, nullable=False),
        sa.Column("visits", JSON, nullable=False),
        sa.CheckConstraint(
            "state IN ('active', 'waiting', 'completed', 'exited', 'failed')",
            name=op.f("ck_journey_instances_state_known"),
        ),
        sa.ForeignKeyConstraint(
            ["journey_id"],
            ["journeys.id"],
            name=op.f("fk_journey_instances_journey_id_journeys"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["profile_id"],
            ["profiles.id"],
            name=op.f("fk_journey_instances_profile_id_profiles"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["journey_versions.id"],
            name=op.f("fk_journey_instances_version_id_journey_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_journey_instances")),
        sa.UniqueConstraint(
            "journey_id",
            "profile_id",
            "entry_key",
            "rotation",
            name=op.f("uq_journey_instances_journey_id_profile_id_entry_key_rotation"),
        ),
    )
    with op.batch_alter_table("journey_instances", schema=None) as batch_op:
        batch_op.create_index(
            "ix_journey_instances_due",
            ["next_run_at"],
            unique=False,
            sqlite_where=sa.text("next_run_at IS NOT NULL"),
            postgresql_where=sa.text("next_run_at IS NOT NULL"),
        )
        batch_op.create_index(
            "ix_journey_instances_journey_step", ["journey_id", "step_id", "state"], unique=False
        )
        batch_op.create_index(
            "ix_journey_instances_profile_state", ["profile_id", "state"], unique=False
        )
        batch_op.create_index(
            "ix_journey_instances_waiting_event",
            ["waiting_event", "profile_id"],
            unique=False,
            sqlite_where=sa.text("waiting_event IS NOT NULL"),
            postgresql_where=sa.text("waiting_event IS NOT NULL"),
        )

    op.create_table(
        "deliveries",
        sa.Column("id", BIGINT_PK, nullable=False),
        sa.Column("key", sa.String(length=160), nullable=False),
        sa.Column("journey_id", sa.Integer(), nullable=True),
        sa.Column("version_id", sa.Integer(), nullable=True),
        sa.Column("instance_id", BIGINT_PK, nullable=True),
        sa.Column("step_id", sa.String(length=40), nullable=False),
        sa.Column("profile_id", BIGINT_PK, nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=True),
        sa.Column("content_version_id", sa.Integer(), nullable=True),
        sa.Column("category", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", TS, nullable=True),
        sa.Column("claimed_until", TS, nullable=True),
        sa.Column("payload", JSON, nullable=False),
        sa.Column("provider_id", sa.String(length=128), nullable=True),
        sa.Column("response", JSON, nullable=False),
        sa.Column("test", sa.Boolean(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("sent_at", TS, nullable=True),
        sa.Column("delivered_at", TS, nullable=True),
        sa.ForeignKeyConstraint(
            ["content_version_id"],
            ["content_versions.id"],
            name=op.f("fk_deliveries_content_version_id_content_versions"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["journey_instances.id"],
            name=op.f("fk_deliveries_instance_id_journey_instances"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["journey_id"],
            ["journeys.id"],
            name=op.f("fk_deliveries_journey_id_journeys"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["profile_id"],
            ["profiles.id"],
            name=op.f("fk_deliveries_profile_id_profiles"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["journey_versions.id"],
            name=op.f("fk_deliveries_version_id_journey_versions"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
        sa.UniqueConstraint("key", name=op.f("uq_deliveries_key")),
    )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_deliveries_due",
            ["next_attempt_at"],
            unique=False,
            sqlite_where=sa.text("next_attempt_at IS NOT NULL"),
            postgresql_where=sa.text("next_attempt_at IS NOT NULL"),
        )
        batch_op.create_index(
            "ix_deliveries_journey_step_status", ["journey_id", "step_id", "status"], unique=False
        )
        batch_op.create_index(
            "ix_deliveries_profile_channel_sent", ["profile_id", "channel", "sent_at"], unique=False
        )
        batch_op.create_index(
            "ix_deliveries_profile_created", ["profile_id", "created_at"], unique=False
        )
        batch_op.create_index("ix_deliveries_provider", ["channel", "provider_id"], unique=False)

    op.create_table(
        "journey_step_log",
        sa.Column("id", BIGINT_PK, nullable=False),
        sa.Column("instance_id", BIGINT_PK, nullable=False),
        sa.Column("journey_id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("step_id", sa.String(length=40), nullable=False),
        sa.Column("outcome", sa.String(length=60), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["journey_instances.id"],
            name=op.f("fk_journey_step_log_instance_id_journey_instances"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["journey_id"],
            ["journeys.id"],
            name=op.f("fk_journey_step_log_journey_id_journeys"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["journey_versions.id"],
            name=op.f("fk_journey_step_log_version_id_journey_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_journey_step_log")),
    )
    with op.batch_alter_table("journey_step_log", schema=None) as batch_op:
        batch_op.create_index("ix_journey_step_log_instance", ["instance_id"], unique=False)
        batch_op.create_index(
            "ix_journey_step_log_journey_step", ["journey_id", "step_id", "outcome"], unique=False
        )


def downgrade():
    with op.batch_alter_table("journey_step_log", schema=None) as batch_op:
        batch_op.drop_index("ix_journey_step_log_journey_step")
        batch_op.drop_index("ix_journey_step_log_instance")

    op.drop_table("journey_step_log")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_provider")
        batch_op.drop_index("ix_deliveries_profile_created")
        batch_op.drop_index("ix_deliveries_profile_channel_sent")
        batch_op.drop_index("ix_deliveries_journey_step_status")
        batch_op.drop_index(
            "ix_deliveries_due",
            sqlite_where=sa.text("next_attempt_at IS NOT NULL"),
            postgresql_where=sa.text("next_attempt_at IS NOT NULL"),
        )

    op.drop_table("deliveries")
    with op.batch_alter_table("journey_instances", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_journey_instances_waiting_event",
            sqlite_where=sa.text("waiting_event IS NOT NULL"),
            postgresql_where=sa.text("waiting_event IS NOT NULL"),
        )
        batch_op.drop_index("ix_journey_instances_profile_state")
        batch_op.drop_index("ix_journey_instances_journey_step")
        batch_op.drop_index(
            "ix_journey_instances_due",
            sqlite_where=sa.text("next_run_at IS NOT NULL"),
            postgresql_where=sa.text("next_run_at IS NOT NULL"),
        )

    op.drop_table("journey_instances")
    op.drop_table("journey_versions")
    op.drop_table("journey_schedule_runs")
    with op.batch_alter_table("journeys", schema=None) as batch_op:
        batch_op.drop_index("ix_journeys_status")

    op.drop_table("journeys")
    op.drop_table("channel_unreachable")
