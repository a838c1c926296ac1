"""content library and privacy: content items/versions/reviews, subscribe credits, privacy requests, tombstones, retention rules

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIME = sa.DateTime(timezone=True)


def _fk(table: str, column: str, target: str, ondelete: str):
    target_table = target.split(".")[0]
    return sa.ForeignKeyConstraint(
        [column], [target], name=op.f(f"fk_{table}_{column}_{target_table}"), ondelete=ondelete
    )


def upgrade():
    op.create_table(
        "content_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        _fk("content_items", "created_by_id", "users.id", "SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_content_items")),
    )
    op.create_table(
        "content_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("body", JSON, nullable=False),
        sa.Column("audience", sa.String(length=16), nullable=False),
        sa.Column("products", JSON, nullable=False),
        sa.Column("product_class", sa.String(length=16), nullable=False),
        sa.Column("therapeutic_area", sa.String(length=100), nullable=False),
        sa.Column("category", sa.String(length=16), nullable=False),
        sa.Column("expires_on", sa.Date(), nullable=True),
        sa.Column("approval_code", sa.String(length=64), nullable=True),
        sa.Column("variables", JSON, nullable=False),
        sa.Column("author_id", sa.Integer(), nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.Column("submitted_at", TIME, nullable=True),
        sa.Column("submitted_by_id", sa.Integer(), nullable=True),
        sa.Column("reviewed_at", TIME, nullable=True),
        sa.Column("reviewed_by_id", sa.Integer(), nullable=True),
        sa.Column("approved_hash", sa.String(length=64), nullable=True),
        _fk("content_versions", "author_id", "users.id", "SET NULL"),
        _fk("content_versions", "item_id", "content_items.id", "CASCADE"),
        _fk("content_versions", "reviewed_by_id", "users.id", "SET NULL"),
        _fk("content_versions", "submitted_by_id", "users.id", "SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_content_versions")),
        sa.UniqueConstraint("item_id", "number", name="uq_content_versions_item_number"),
    )
    with op.batch_alter_table("content_versions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_content_versions_item_id"), ["item_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_content_versions_status"), ["status"], unique=False)

    op.create_table(
        "content_transitions",
        sa.Column("id", BIGINT, nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("from_status", sa.String(length=16), nullable=True),
        sa.Column("to_status", sa.String(length=16), nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("at", TIME, nullable=False),
        _fk("content_transitions", "actor_id", "users.id", "SET NULL"),
        _fk("content_transitions", "version_id", "content_versions.id", "CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_content_transitions")),
    )
    with op.batch_alter_table("content_transitions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_content_transitions_version_id"), ["version_id"], unique=False
        )

    op.create_table(
        "subscribe_credits",
        sa.Column("profile_id", BIGINT, nullable=False),
        sa.Column("template_id", sa.String(length=128), nullable=False),
        sa.Column("credits", sa.Integer(), nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        _fk("subscribe_credits", "profile_id", "profiles.id", "CASCADE"),
        sa.PrimaryKeyConstraint("profile_id", "template_id", name=op.f("pk_subscribe_credits")),
    )
    op.create_table(
        "privacy_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("profile_id", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("requested_by_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.String(length=300), nullable=False),
        sa.Column("result", JSON, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("finished_at", TIME, nullable=True),
        _fk("privacy_requests", "job_id", "job_runs.id", "SET NULL"),
        _fk("privacy_requests", "requested_by_id", "users.id", "SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_privacy_requests")),
    )
    with op.batch_alter_table("privacy_requests", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_privacy_requests_profile_id"), ["profile_id"], unique=False
        )

    op.create_table(
        "privacy_tombstones",
        sa.Column("id", BIGINT, nullable=False),
        sa.Column("identifier_type", sa.String(length=32), nullable=False),
        sa.Column("value_hash", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        _fk("privacy_tombstones", "request_id", "privacy_requests.id", "SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_privacy_tombstones")),
        sa.UniqueConstraint("identifier_type", "value_hash", name="uq_privacy_tombstones_value"),
    )
    op.create_table(
        "retention_rules",
        sa.Column("event_name", sa.String(length=200), nullable=False),
        sa.Column("days", sa.Integer(), nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.Column("updated_by_id", sa.Integer(), nullable=True),
        _fk("retention_rules", "updated_by_id", "users.id", "SET NULL"),
        sa.PrimaryKeyConstraint("event_name", name=op.f("pk_retention_rules")),
    )
    op.create_table(
        "consent_event_marks",
        sa.Column("event_id", BIGINT, nullable=False),
        sa.Column("processed_at", TIME, nullable=False),
        _fk("consent_event_marks", "event_id", "events.id", "CASCADE"),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_consent_event_marks")),
    )


def downgrade():
    op.drop_table("consent_event_marks")
    op.drop_table("retention_rules")
    op.drop_table("privacy_tombstones")
    with op.batch_alter_table("privacy_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_privacy_requests_profile_id"))
    op.drop_table("privacy_requests")
    op.drop_table("subscribe_credits")
    with op.batch_alter_table("content_transitions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_content_transitions_version_id"))
    op.drop_table("content_transitions")
    with op.batch_alter_table("content_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_content_versions_status"))
        batch_op.drop_index(batch_op.f("ix_content_versions_item_id"))
    op.drop_table("content_versions")
    op.drop_table("content_items")
