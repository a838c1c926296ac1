"""propensity models: models, trained versions (one active), stored scores

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade():
    op.create_table(
        "propensity_models",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=80), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("target_event", sa.String(length=200), nullable=False),
        sa.Column("target_where", JSON, nullable=False),
        sa.Column("horizon_days", sa.Integer(), nullable=False),
        sa.Column("profile_kind", sa.String(length=16), nullable=False),
        sa.Column("rescore_hours", sa.Integer(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["created_by_id"],
            ["users.id"],
            name=op.f("fk_propensity_models_created_by_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_propensity_models")),
        sa.UniqueConstraint("name", name=op.f("uq_propensity_models_name")),
    )
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("algorithm", sa.String(length=16), nullable=False),
        sa.Column("params", JSON, nullable=False),
        sa.Column("features", JSON, nullable=False),
        sa.Column("metrics", JSON, nullable=False),
        sa.Column("beats_baseline", sa.Boolean(), nullable=False),
        sa.Column("health_data", sa.Boolean(), nullable=False),
        sa.Column("cutoff", TS, nullable=False),
        sa.Column("training_window", JSON, nullable=False),
        sa.Column("data_size", JSON, nullable=False),
        sa.Column("artifact_path", sa.String(length=500), nullable=False),
        sa.Column("artifact_sha256", sa.String(length=64), nullable=False),
        sa.Column("artifact_bytes", sa.BigInteger(), nullable=False),
        sa.Column("train_seconds", sa.Float(), nullable=False),
        sa.Column("trained_by", sa.String(length=120), nullable=False),
        sa.Column("trained_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("activated_at", TS, nullable=True),
        sa.Column("scored_at", TS, nullable=True),
        sa.Column("scored_as_of", TS, nullable=True),
        sa.Column("scored_count", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "algorithm IN ('hgb', 'logistic')", name=op.f("ck_model_versions_algorithm_known")
        ),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["propensity_models.id"],
            name=op.f("fk_model_versions_model_id_propensity_models"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["trained_by_id"],
            ["users.id"],
            name=op.f("fk_model_versions_trained_by_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_versions")),
        sa.UniqueConstraint("model_id", "version", name=op.f("uq_model_versions_model_id_version")),
    )
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.create_index(
            "uq_model_versions_active",
            ["model_id"],
            unique=True,
            sqlite_where=sa.text("active"),
            postgresql_where=sa.text("active"),
        )

    op.create_table(
        "propensity_scores",
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("profile_id", BIGINT_PK, nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("rank", sa.BigInteger(), nullable=False),
        sa.Column("decile", sa.SmallInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_propensity_scores_model_version_id_model_versions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["profile_id"],
            ["profiles.id"],
            name=op.f("fk_propensity_scores_profile_id_profiles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "model_version_id", "profile_id", name=op.f("pk_propensity_scores")
        ),
    )
    with op.batch_alter_table("propensity_scores", schema=None) as batch_op:
        batch_op.create_index(
            "ix_propensity_scores_version_score", ["model_version_id", "score"], unique=False
        )
        batch_op.create_index(
            "ix_propensity_scores_version_rank", ["model_version_id", "rank"], unique=False
        )
        batch_op.create_index("ix_propensity_scores_profile", ["profile_id"], unique=False)


def downgrade():
    with op.batch_alter_table("propensity_scores", schema=None) as batch_op:
        batch_op.drop_index("ix_propensity_scores_profile")
        batch_op.drop_index("ix_propensity_scores_version_rank")
        batch_op.drop_index("ix_propensity_scores_version_score")

    op.drop_table("propensity_scores")
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_model_versions_active",
            sqlite_where=sa.text("active"),
            postgresql_where=sa.text("active"),
        )

    op.drop_table("model_versions")
    op.drop_table("propensity_models")
