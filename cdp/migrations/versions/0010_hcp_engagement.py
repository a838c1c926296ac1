"""hcp engagement: doctor master data, meetings, participants, quizzes, knowledge, academic points; rep and manager roles

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)
OLD_ROLES = "role IN ('admin', 'marketer', 'reviewer', 'analyst', 'partner')"
NEW_ROLES = "role IN ('admin', 'marketer', 'reviewer', 'analyst', 'partner', 'rep', 'manager')"


def _fk(table: str, column: str, target: str, ondelete: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column],
        [f"{target}.id"],
        name=op.f(f"fk_{table}_{column}_{target}"),
        ondelete=ondelete,
    )


def _set_role_check(old: str, new: str) -> None:
    """Widen (or narrow back) the users.role CHECK without rebuilding the users table.

    On SQLite a batch rebuild drops and renames ``users``; with foreign keys on, the drop
    runs the ON DELETE actions of every table pointing at it (sessions deleted, authors
    nulled). SQLite documents editing the stored CREATE statement for changes that leave the
    file format alone, such as a CHECK constraint: that is what happens here.
    """
    if op.get_bind().dialect.name == "sqlite":
        version = op.get_bind().exec_driver_sql("PRAGMA schema_version").scalar()
        op.execute("PRAGMA writable_schema = ON")
        op.get_bind().exec_driver_sql(
            "UPDATE sqlite_master SET sql = replace(sql, ?, ?) WHERE type = 'table' AND name = ?",
            (old, new, "users"),
        )
        op.execute(f"PRAGMA schema_version = {int(version) + 1}")
        op.execute("PRAGMA writable_schema = OFF")
        return
    op.drop_constraint(op.f("ck_users_role_known"), "users", type_="check")
    op.create_check_constraint(op.f("ck_users_role_known"), "users", new)


def upgrade():
    _set_role_check(OLD_ROLES, NEW_ROLES)
    op.create_table(
        "hcp_profiles",
        sa.Column("profile_id", BIGINT_PK, nullable=False),
        sa.Column("hospital", sa.String(length=200), nullable=False),
        sa.Column("department", sa.String(length=100), nullable=False),
        sa.Column("title", sa.String(length=16), nullable=True),
        sa.Column("city_tier", sa.SmallInteger(), nullable=True),
        sa.Column("society_role", sa.String(length=16), nullable=False),
        sa.Column("verification", sa.String(length=16), nullable=False),
        sa.Column("verification_method", sa.String(length=16), nullable=True),
        sa.Column("verified_by_id", sa.Integer(), nullable=True),
        sa.Column("verified_at", TS, nullable=True),
        sa.Column("rep_id", sa.Integer(), nullable=True),
        sa.Column("tier", sa.String(length=16), nullable=False),
        sa.Column("tier_rule", sa.Integer(), nullable=True),
        sa.Column("tier_override", sa.String(length=16), nullable=True),
        sa.Column("tier_override_reason", sa.String(length=200), nullable=False),
        sa.Column("tier_overridden_by_id", sa.Integer(), nullable=True),
        sa.Column("tier_overridden_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint(
            "verification IN ('unverified', 'verified')",
            name=op.f("ck_hcp_profiles_verification_known"),
        ),
        sa.CheckConstraint(
            "tier IN ('national_kol', 'regional_kol', 'hospital_kol', 'koi', 'general')",
            name=op.f("ck_hcp_profiles_tier_known"),
        ),
        _fk("hcp_profiles", "profile_id", "profiles", "CASCADE"),
        _fk("hcp_profiles", "verified_by_id", "users", "SET NULL"),
        _fk("hcp_profiles", "rep_id", "users", "SET NULL"),
        _fk("hcp_profiles", "tier_overridden_by_id", "users", "SET NULL"),
        sa.PrimaryKeyConstraint("profile_id", name=op.f("pk_hcp_profiles")),
    )
    with op.batch_alter_table("hcp_profiles", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_hcp_profiles_rep_id"), ["rep_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_hcp_profiles_verification"), ["verification"], unique=False
        )

    op.create_table(
        "hcp_meetings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("topic", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("product", sa.String(length=100), nullable=False),
        sa.Column("therapeutic_area", sa.String(length=100), nullable=False),
        sa.Column("campaign", sa.String(length=100), nullable=False),
        sa.Column("speaker_name", sa.String(length=120), nullable=False),
        sa.Column("speaker_profile_id", sa.BigInteger(), nullable=True),
        sa.Column("starts_at", TS, nullable=False),
        sa.Column("ends_at", TS, nullable=True),
        sa.Column("content_version_id", sa.Integer(), nullable=False),
        sa.Column("min_minutes", sa.Integer(), nullable=False),
        sa.Column("points_action", sa.String(length=64), nullable=False),
        sa.Column("quiz", JSON, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint(
            "status IN ('scheduled', 'cancelled')", name=op.f("ck_hcp_meetings_status_known")
        ),
        _fk("hcp_meetings", "content_version_id", "content_versions", "RESTRICT"),
        _fk("hcp_meetings", "created_by_id", "users", "SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hcp_meetings")),
    )
    with op.batch_alter_table("hcp_meetings", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_hcp_meetings_campaign"), ["campaign"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_hcp_meetings_speaker_profile_id"), ["speaker_profile_id"], unique=False
        )

    op.create_table(
        "hcp_participants",
        sa.Column("id", BIGINT_PK, nullable=False),
        sa.Column("meeting_id", sa.Integer(), nullable=False),
        sa.Column("profile_id", BIGINT_PK, nullable=False),
        sa.Column("invitation", sa.String(length=16), nullable=True),
        sa.Column("invited_via", sa.String(length=16), nullable=True),
        sa.Column("requested_by_id", sa.Integer(), nullable=True),
        sa.Column("requested_at", TS, nullable=True),
        sa.Column("request_note", sa.String(length=200), nullable=False),
        sa.Column("decided_by_id", sa.Integer(), nullable=True),
        sa.Column("decided_at", TS, nullable=True),
        sa.Column("journey_key", sa.String(length=128), nullable=True),
        sa.Column("invited_at", TS, nullable=True),
        sa.Column("registered_at", TS, nullable=True),
        sa.Column("first_joined_at", TS, nullable=True),
        sa.Column("attended_seconds", sa.Integer(), nullable=False),
        sa.Column("completed_at", TS, nullable=True),
        sa.Column("updated_at", TS, nullable=False),
        _fk("hcp_participants", "meeting_id", "hcp_meetings", "CASCADE"),
        _fk("hcp_participants", "profile_id", "profiles", "CASCADE"),
        _fk("hcp_participants", "requested_by_id", "users", "SET NULL"),
        _fk("hcp_participants", "decided_by_id", "users", "SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hcp_participants")),
        sa.UniqueConstraint(
            "meeting_id", "profile_id", name=op.f("uq_hcp_participants_meeting_profile")
        ),
    )
    with op.batch_alter_table("hcp_participants", schema=None) as batch_op:
        batch_op.create_index(
            "ix_hcp_participants_invitation", ["invitation", "meeting_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_hcp_participants_profile_id"), ["profile_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_hcp_participants_requested_by_id"), ["requested_by_id"], unique=False
        )

    op.create_table(
        "hcp_quiz_submissions",
        sa.Column("id", BIGINT_PK, nullable=False),
        sa.Column("meeting_id", sa.Integer(), nullable=False),
        sa.Column("profile_id", BIGINT_PK, nullable=False),
        sa.Column("answers", JSON, nullable=False),
        sa.Column("scores", JSON, nullable=False),
        sa.Column("correct", sa.Integer(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=True),
        sa.Column("submitted_at", TS, nullable=False),
        _fk("hcp_quiz_submissions", "meeting_id", "hcp_meetings", "CASCADE"),
        _fk("hcp_quiz_submissions", "profile_id", "profiles", "CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hcp_quiz_submissions")),
        sa.UniqueConstraint(
            "meeting_id", "profile_id", name=op.f("uq_hcp_quiz_submissions_meeting")
        ),
    )
    with op.batch_alter_table("hcp_quiz_submissions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_hcp_quiz_submissions_profile_id"), ["profile_id"], unique=False
        )

    op.create_table(
        "hcp_knowledge",
        sa.Column("profile_id", BIGINT_PK, nullable=False),
        sa.Column("dimension", sa.String(length=40), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("assessments", sa.Integer(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        _fk("hcp_knowledge", "profile_id", "profiles", "CASCADE"),
        sa.PrimaryKeyConstraint("profile_id", "dimension", name=op.f("pk_hcp_knowledge")),
    )
    with op.batch_alter_table("hcp_knowledge", schema=None) as batch_op:
        batch_op.create_index(
            "ix_hcp_knowledge_dimension_score", ["dimension", "score"], unique=False
        )

    op.create_table(
        "hcp_knowledge_history",
        sa.Column("id", BIGINT_PK, nullable=False),
        sa.Column("profile_id", BIGINT_PK, nullable=False),
        sa.Column("dimension", sa.String(length=40), nullable=False),
        sa.Column("score_before", sa.Float(), nullable=True),
        sa.Column("score_after", sa.Float(), nullable=False),
        sa.Column("quiz_score", sa.Float(), nullable=False),
        sa.Column("submission_id", BIGINT_PK, nullable=False),
        sa.Column("meeting_id", sa.Integer(), nullable=False),
        sa.Column("at", TS, nullable=False),
        _fk("hcp_knowledge_history", "profile_id", "profiles", "CASCADE"),
        _fk("hcp_knowledge_history", "submission_id", "hcp_quiz_submissions", "CASCADE"),
        _fk("hcp_knowledge_history", "meeting_id", "hcp_meetings", "CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hcp_knowledge_history")),
    )
    with op.batch_alter_table("hcp_knowledge_history", schema=None) as batch_op:
        batch_op.create_index(
            "ix_hcp_knowledge_history_profile", ["profile_id", "dimension", "id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_hcp_knowledge_history_submission_id"), ["submission_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_hcp_knowledge_history_meeting_id"), ["meeting_id"], unique=False
        )

    op.create_table(
        "hcp_awards",
        sa.Column("id", BIGINT_PK, nullable=False),
        sa.Column("profile_id", BIGINT_PK, nullable=False),
        sa.Column("meeting_id", sa.Integer(), nullable=False),
        sa.Column("content_version_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=300), nullable=False),
        sa.Column("points_entry_id", BIGINT_PK, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint(
            "status IN ('awarded', 'refused')", name=op.f("ck_hcp_awards_status_known")
        ),
        _fk("hcp_awards", "profile_id", "profiles", "CASCADE"),
        _fk("hcp_awards", "meeting_id", "hcp_meetings", "CASCADE"),
        _fk("hcp_awards", "content_version_id", "content_versions", "RESTRICT"),
        _fk("hcp_awards", "points_entry_id", "loyalty_point_entries", "CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hcp_awards")),
        sa.UniqueConstraint("meeting_id", "profile_id", name=op.f("uq_hcp_awards_meeting_profile")),
    )
    with op.batch_alter_table("hcp_awards", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_hcp_awards_profile_id"), ["profile_id"], unique=False)

    op.create_table(
        "hcp_academic_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("approved_by_id", sa.Integer(), nullable=True),
        sa.Column("approved_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.CheckConstraint(
            "status IN ('draft', 'approved', 'retired')",
            name=op.f("ck_hcp_academic_items_status_known"),
        ),
        _fk("hcp_academic_items", "created_by_id", "users", "SET NULL"),
        _fk("hcp_academic_items", "approved_by_id", "users", "SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hcp_academic_items")),
        sa.UniqueConstraint("code", name=op.f("uq_hcp_academic_items_code")),
    )

    op.create_table(
        "hcp_redemptions",
        sa.Column("id", BIGINT_PK, nullable=False),
        sa.Column("profile_id", BIGINT_PK, nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=128), nullable=False),
        sa.Column("points_entry_id", BIGINT_PK, nullable=True),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        _fk("hcp_redemptions", "profile_id", "profiles", "CASCADE"),
        _fk("hcp_redemptions", "item_id", "hcp_academic_items", "RESTRICT"),
        _fk("hcp_redemptions", "points_entry_id", "loyalty_point_entries", "CASCADE"),
        _fk("hcp_redemptions", "created_by_id", "users", "SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hcp_redemptions")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_hcp_redemptions_idempotency_key")),
    )
    with op.batch_alter_table("hcp_redemptions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_hcp_redemptions_profile_id"), ["profile_id"], unique=False
        )


def downgrade():
    op.drop_table("hcp_redemptions")
    op.drop_table("hcp_academic_items")
    op.drop_table("hcp_awards")
    op.drop_table("hcp_knowledge_history")
    op.drop_table("hcp_knowledge")
    op.drop_table("hcp_quiz_submissions")
    op.drop_table("hcp_participants")
    op.drop_table("hcp_meetings")
    op.drop_table("hcp_profiles")
    # Reps and managers cannot stay under the old CHECK: they keep their rows, deactivated,
    # as analysts (the role that can change nothing) so nothing pointing at them is lost.
    op.execute(
        "UPDATE users SET role = 'analyst', is_active = false WHERE role IN ('rep', 'manager')"
    )
    _set_role_check(NEW_ROLES, OLD_ROLES)
