"""connectors: pull cursors, API tokens, replay nonces, mini-program sessions, errors, stats

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def _source_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["source_id"],
        ["sources.id"],
        name=op.f(f"fk_{table}_source_id_sources"),
        ondelete="CASCADE",
    )


def upgrade():
    op.create_table(
        "connector_cursors",
        sa.Column("source_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("position", JSON, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("last_started_at", TS, nullable=True),
        sa.Column("last_finished_at", TS, nullable=True),
        sa.Column("last_success_at", TS, nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint(
            "status IN ('idle', 'running', 'paused', 'failed')",
            name=op.f("ck_connector_cursors_status_known"),
        ),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["job_runs.id"],
            name=op.f("fk_connector_cursors_job_id_job_runs"),
            ondelete="SET NULL",
        ),
        _source_fk("connector_cursors"),
        sa.PrimaryKeyConstraint("source_id", "name", name=op.f("pk_connector_cursors")),
    )
    op.create_table(
        "connector_tokens",
        sa.Column("app_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("token_encrypted", sa.LargeBinary(), nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("fetched_at", TS, nullable=False),
        sa.Column("forced_at", TS, nullable=True),
        sa.Column("forced_today", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("app_id", "kind", name=op.f("pk_connector_tokens")),
    )
    op.create_table(
        "connector_nonces",
        sa.Column("source_id", sa.String(length=32), nullable=False),
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("seen_at", TS, nullable=False),
        _source_fk("connector_nonces"),
        sa.PrimaryKeyConstraint("source_id", "nonce", name=op.f("pk_connector_nonces")),
    )
    with op.batch_alter_table("connector_nonces", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_connector_nonces_seen_at"), ["seen_at"], unique=False)
    op.create_table(
        "miniprogram_sessions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("source_id", sa.String(length=32), nullable=False),
        sa.Column("openid", sa.String(length=64), nullable=False),
        sa.Column("unionid", sa.String(length=64), nullable=True),
        sa.Column("profile_id", BIGINT_PK, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("revoked_at", TS, nullable=True),
        sa.ForeignKeyConstraint(
            ["profile_id"],
            ["profiles.id"],
            name=op.f("fk_miniprogram_sessions_profile_id_profiles"),
            ondelete="CASCADE",
        ),
        _source_fk("miniprogram_sessions"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_miniprogram_sessions")),
    )
    with op.batch_alter_table("miniprogram_sessions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_miniprogram_sessions_source_openid", ["source_id", "openid"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_miniprogram_sessions_profile_id"), ["profile_id"], unique=False
        )
    op.create_table(
        "connector_errors",
        sa.Column("id", BIGINT_PK, nullable=False),
        sa.Column("source_id", sa.String(length=32), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("payload_masked", sa.Text(), nullable=False),
        _source_fk("connector_errors"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_connector_errors")),
    )
    with op.batch_alter_table("connector_errors", schema=None) as batch_op:
        batch_op.create_index("ix_connector_errors_source_id", ["source_id", "id"], unique=False)
    op.create_table(
        "connector_stats",
        sa.Column("source_id", sa.String(length=32), nullable=False),
        sa.Column("bucket", TS, nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("duplicates", sa.BigInteger(), nullable=False),
        sa.Column("rejected", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("last_event_at", TS, nullable=True),
        _source_fk("connector_stats"),
        sa.PrimaryKeyConstraint("source_id", "bucket", name=op.f("pk_connector_stats")),
    )


def downgrade():
    op.drop_table("connector_stats")
    with op.batch_alter_table("connector_errors", schema=None) as batch_op:
        batch_op.drop_index("ix_connector_errors_source_id")
    op.drop_table("connector_errors")
    with op.batch_alter_table("miniprogram_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_miniprogram_sessions_profile_id"))
        batch_op.drop_index("ix_miniprogram_sessions_source_openid")
    op.drop_table("miniprogram_sessions")
    with op.batch_alter_table("connector_nonces", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_connector_nonces_seen_at"))
    op.drop_table("connector_nonces")
    op.drop_table("connector_tokens")
    op.drop_table("connector_cursors")
