"""Doctors (HCP): master data, meetings, participation, quizzes, knowledge, academic points."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from cdp.db import BigIntPK, JSONType, UTCDateTime, db, utcnow

TITLES = ("主任医师", "副主任医师", "主治医师", "住院医师")
TIERS = ("national_kol", "regional_kol", "hospital_kol", "koi", "general")
VERIFICATION_STATES = ("unverified", "verified")
VERIFICATION_METHODS = ("rep", "licence_check")
SOCIETY_ROLES = ("none", "city", "provincial", "national")
CITY_TIERS = (1, 2, 3, 4, 5)  # 一线, 新一线, 二线, 三线, 四线及以下
MEETING_KINDS = ("department_meeting", "webinar", "cme_course")
MEETING_STATUSES = ("scheduled", "cancelled")
INVITATION_STATES = ("requested", "invited", "rejected")
INVITED_VIA = ("rep", "manager", "journey")
AWARD_STATES = ("awarded", "refused")
ITEM_STATES = ("draft", "approved", "retired")


def _known(column: str, values: tuple) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class HcpProfile(db.Model):
    """Master data of an ``hcp`` profile; the licence number itself is an identity (hcp_license)."""

    __tablename__ = "hcp_profiles"

    profile_id: Mapped[int] = mapped_column(
        sa.ForeignKey("profiles.id", ondelete="CASCADE"), primary_key=True
    )
    hospital: Mapped[str] = mapped_column(sa.String(200), default="")
    department: Mapped[str] = mapped_column(sa.String(100), default="")
    title: Mapped[str | None] = mapped_column(sa.String(16))
    city_tier: Mapped[int | None] = mapped_column(sa.SmallInteger)
    society_role: Mapped[str] = mapped_column(sa.String(16), default="none")
    verification: Mapped[str] = mapped_column(sa.String(16), default="unverified", index=True)
    verification_method: Mapped[str | None] = mapped_column(sa.String(16))
    verified_by_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    rep_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    # Computed by the tier rules (cdp.hcp.tiers); the override, when set, wins.
    tier: Mapped[str] = mapped_column(sa.String(16), default="general")
    tier_rule: Mapped[int | None] = mapped_column(sa.Integer)
    tier_override: Mapped[str | None] = mapped_column(sa.String(16))
    tier_override_reason: Mapped[str] = mapped_column(sa.String(200), default="")
    tier_overridden_by_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    tier_overridden_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        sa.CheckConstraint(_known("verification", VERIFICATION_STATES), name="verification_known"),
        sa.CheckConstraint(_known("tier", TIERS), name="tier_known"),
    )

    @property
    def effective_tier(self) -> str:
        return self.tier_override or self.tier


class Meeting(db.Model):
    """An online department meeting (科室会), webinar or CME course, with its quiz."""

    __tablename__ = "hcp_meetings"

    id: Mapped[int] = mapped_column(primary_key=True)
    topic: Mapped[str] = mapped_column(sa.String(200))
    kind: Mapped[str] = mapped_column(sa.String(24), default="department_meeting")
    product: Mapped[str] = mapped_column(sa.String(100), default="")
    therapeutic_area: Mapped[str] = mapped_column(sa.String(100), default="")
    campaign: Mapped[str] = mapped_column(sa.String(100), default="", index=True)
    speaker_name: Mapped[str] = mapped_column(sa.String(120), default="")
    # Not a foreign key: erasure deletes every row that points at the person's profile (and
    # what points at those rows), which would take the meeting and everyone's attendance with
    # it. An erasure hook clears this column instead (cdp.hcp.init_app).
    speaker_profile_id: Mapped[int | None] = mapped_column(sa.BigInteger, index=True)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The approved HCP content version the meeting presents (checked when it is set).
    content_version_id: Mapped[int] = mapped_column(
        sa.ForeignKey("content_versions.id", ondelete="RESTRICT")
    )
    min_minutes: Mapped[int] = mapped_column(sa.Integer, default=30)
    points_action: Mapped[str] = mapped_column(sa.String(64), default="cme_module_completed")
    # [{"id", "text", "options": [...], "answer": [index, ...], "dimensions": [...], "weight"}]
    quiz: Mapped[list] = mapped_column(JSONType, default=list)
    status: Mapped[str] = mapped_column(sa.String(16), default="scheduled")
    created_by_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (sa.CheckConstraint(_known("status", MEETING_STATUSES), name="status_known"),)


class Participant(db.Model):
    """One doctor's way through one meeting: invitation, registration, attendance, completion."""

    __tablename__ = "hcp_participants"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    meeting_id: Mapped[int] = mapped_column(sa.ForeignKey("hcp_meetings.id", ondelete="CASCADE"))
    profile_id: Mapped[int] = mapped_column(
        sa.ForeignKey("profiles.id", ondelete="CASCADE"), index=True
    )
    invitation: Mapped[str | None] = mapped_column(sa.String(16))
    invited_via: Mapped[str | None] = mapped_column(sa.String(16))
    requested_by_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    request_note: Mapped[str] = mapped_column(sa.String(200), default="")
    decided_by_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    journey_key: Mapped[str | None] = mapped_column(sa.String(128))
    invited_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    registered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    first_joined_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attended_seconds: Mapped[int] = mapped_column(sa.Integer, default=0)
    # Attendance at or above the meeting's minimum and the quiz submitted.
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        sa.UniqueConstraint("meeting_id", "profile_id", name="uq_hcp_participants_meeting_profile"),
        sa.Index("ix_hcp_participants_invitation", "invitation", "meeting_id"),
    )


class QuizSubmission(db.Model):
    """A doctor's answers to a meeting's quiz, scored per knowledge dimension (first one counts)."""

    __tablename__ = "hcp_quiz_submissions"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    meeting_id: Mapped[int] = mapped_column(sa.ForeignKey("hcp_meetings.id", ondelete="CASCADE"))
    profile_id: Mapped[int] = mapped_column(
        sa.ForeignKey("profiles.id", ondelete="CASCADE"), index=True
    )
    answers: Mapped[dict] = mapped_column(JSONType, default=dict)
    scores: Mapped[dict] = mapped_column(JSONType, default=dict)  # dimension -> 0..100
    correct: Mapped[int] = mapped_column(sa.Integer, default=0)
    total: Mapped[int] = mapped_column(sa.Integer, default=0)
    # The ingested event it came from (none when entered through the API); not a foreign key:
    # events are partitioned by month on PostgreSQL.
    event_id: Mapped[int | None] = mapped_column(sa.BigInteger)
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        sa.UniqueConstraint("meeting_id", "profile_id", name="uq_hcp_quiz_submissions_meeting"),
    )


class KnowledgeScore(db.Model):
    """A doctor's running score (0-100) in one knowledge dimension."""

    __tablename__ = "hcp_knowledge"

    profile_id: Mapped[int] = mapped_column(
        sa.ForeignKey("profiles.id", ondelete="CASCADE"), primary_key=True
    )
    dimension: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    score: Mapped[float] = mapped_column(sa.Float)
    assessments: Mapped[int] = mapped_column(sa.Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (sa.Index("ix_hcp_knowledge_dimension_score", "dimension", "score"),)


class KnowledgeChange(db.Model):
    """History: each quiz's effect on a running score (no score_before the first time)."""

    __tablename__ = "hcp_knowledge_history"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    profile_id: Mapped[int] = mapped_column(sa.ForeignKey("profiles.id", ondelete="CASCADE"))
    dimension: Mapped[str] = mapped_column(sa.String(40))
    score_before: Mapped[float | None] = mapped_column(sa.Float)
    score_after: Mapped[float] = mapped_column(sa.Float)
    quiz_score: Mapped[float] = mapped_column(sa.Float)
    submission_id: Mapped[int] = mapped_column(
        sa.ForeignKey("hcp_quiz_submissions.id", ondelete="CASCADE"), index=True
    )
    meeting_id: Mapped[int] = mapped_column(
        sa.ForeignKey("hcp_meetings.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        sa.Index("ix_hcp_knowledge_history_profile", "profile_id", "dimension", "id"),
    )


class Award(db.Model):
    """Academic points for one completed meeting, or why they were refused (compliance trail)."""

    __tablename__ = "hcp_awards"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    profile_id: Mapped[int] = mapped_column(
        sa.ForeignKey("profiles.id", ondelete="CASCADE"), index=True
    )
    meeting_id: Mapped[int] = mapped_column(sa.ForeignKey("hcp_meetings.id", ondelete="CASCADE"))
    content_version_id: Mapped[int] = mapped_column(
        sa.ForeignKey("content_versions.id", ondelete="RESTRICT")
    )
    status: Mapped[str] = mapped_column(sa.String(16))
    points: Mapped[int] = mapped_column(sa.Integer, default=0)
    reason: Mapped[str] = mapped_column(sa.String(300), default="")
    # Ledger lines cascade, never SET NULL (the ledger is append-only, see PointEntry).
    points_entry_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("loyalty_point_entries.id", ondelete="CASCADE")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        sa.UniqueConstraint("meeting_id", "profile_id", name="uq_hcp_awards_meeting_profile"),
        sa.CheckConstraint(_known("status", AWARD_STATES), name="status_known"),
    )


class AcademicItem(db.Model):
    """The catalogue doctors may spend academic points on; only approved items are redeemable."""

    __tablename__ = "hcp_academic_items"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(sa.String(64), unique=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    kind: Mapped[str] = mapped_column(sa.String(32), default="book")
    points: Mapped[int] = mapped_column(sa.Integer)
    status: Mapped[str] = mapped_column(sa.String(16), default="draft")
    created_by_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    approved_by_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (sa.CheckConstraint(_known("status", ITEM_STATES), name="status_known"),)


class Redemption(db.Model):
    """Points a doctor spent on an academic item."""

    __tablename__ = "hcp_redemptions"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    profile_id: Mapped[int] = mapped_column(
        sa.ForeignKey("profiles.id", ondelete="CASCADE"), index=True
    )
    item_id: Mapped[int] = mapped_column(
        sa.ForeignKey("hcp_academic_items.id", ondelete="RESTRICT")
    )
    points: Mapped[int] = mapped_column(sa.Integer)
    idempotency_key: Mapped[str] = mapped_column(sa.String(128), unique=True)
    points_entry_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("loyalty_point_entries.id", ondelete="CASCADE")
    )
    created_by_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
