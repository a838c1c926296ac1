"""Journeys, their published versions, the instances that run them, and the delivery outbox."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from cdp.db import BigIntPK, JSONType, UTCDateTime, db, utcnow

JOURNEY_STATUSES = ("draft", "published", "paused", "archived")
# active: due to run (next_run_at says when); waiting: on a wait / wait_for_event step;
# completed, exited, failed: ended (next_run_at is None).
INSTANCE_STATES = ("active", "waiting", "completed", "exited", "failed")
LIVE_STATES = ("active", "waiting")
DELIVERY_STATUSES = (
    "pending",  # written before the effect is performed
    "sending",  # claimed by a worker; the provider may or may not have it
    "sent",
    "delivered",
    "failed",
    "skipped",  # consent, cap, quiet hours (skip policy), guards: never sent, with a reason
    "deferred",  # waiting for the quiet-hours window or the cap to allow it
    "uncertain",  # a worker died mid-call to a provider without idempotency keys: not resent
    "preview",  # test mode: rendered into the preview log, never sent
)


class Journey(db.Model):
    """What marketers edit: a draft definition, a status, and the published versions."""

    __tablename__ = "journeys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(120))
    description: Mapped[str] = mapped_column(sa.Text, default="")
    status: Mapped[str] = mapped_column(sa.String(16), default="draft")
    # The definition being edited; publishing copies it into a new JourneyVersion.
    draft: Mapped[dict] = mapped_column(JSONType)
    # Number of the version new entrants get (None until first published).
    live_version: Mapped[int | None]
    # Test mode: only these profiles enter, and sends go to the preview log.
    test_mode: Mapped[bool] = mapped_column(default=False)
    test_profile_ids: Mapped[list] = mapped_column(JSONType, default=list)
    created_by_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        sa.CheckConstraint(
            "status IN ('draft', 'published', 'paused', 'archived')", name="status_known"
        ),
        sa.Index("ix_journeys_status", "status"),
    )


class JourneyVersion(db.Model):
    """A published, immutable definition (content versions pinned)."""

    __tablename__ = "journey_versions"

    id: Mapped[int] = mapped_column(primary_key=True)
    journey_id: Mapped[int] = mapped_column(sa.ForeignKey("journeys.id", ondelete="CASCADE"))
    number: Mapped[int]
    definition: Mapped[dict] = mapped_column(JSONType)
    published_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    published_by_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    note: Mapped[str] = mapped_column(sa.Text, default="")

    __table_args__ = (sa.UniqueConstraint("journey_id", "number"),)


class JourneyInstance(db.Model):
    """One person's trip through one journey version (per entry key and rotation)."""

    __tablename__ = "journey_instances"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    journey_id: Mapped[int] = mapped_column(sa.ForeignKey("journeys.id", ondelete="CASCADE"))
    version_id: Mapped[int] = mapped_column(sa.ForeignKey("journey_versions.id"))
    profile_id: Mapped[int] = mapped_column(sa.ForeignKey("profiles.id", ondelete="CASCADE"))
    # From the triggering event (e.g. the drug code or order id); "" when the journey has none.
    entry_key: Mapped[str] = mapped_column(sa.String(128), default="")
    # 0 for the first entry with this key, then 1, 2 … as re-entry rules allow.
    rotation: Mapped[int] = mapped_column(default=0)
    step_id: Mapped[str | None] = mapped_column(sa.String(40))
    state: Mapped[str] = mapped_column(sa.String(16), default="active")
    # When the engine should look at this instance next; None once it has ended.
    next_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A worker's claim: others leave the instance alone until then.
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The event a wait_for_event step waits for (so incoming events find their instances).
    waiting_event: Mapped[str | None] = mapped_column(sa.String(200))
    step_entered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    entered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    exit_reason: Mapped[str | None] = mapped_column(sa.String(40))
    holdout: Mapped[bool] = mapped_column(default=False)
    test: Mapped[bool] = mapped_column(default=False)
    converted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Trigger event's properties and id, entry key: the content's `context.*` variables.
    context: Mapped[dict] = mapped_column(JSONType, default=dict)
    # step id -> times entered: part of each side effect's idempotency key.
    visits: Mapped[dict] = mapped_column(JSONType, default=dict)

    __table_args__ = (
        sa.UniqueConstraint("journey_id", "profile_id", "entry_key", "rotation"),
        sa.CheckConstraint(
            "state IN ('active', 'waiting', 'completed', 'exited', 'failed')", name="state_known"
        ),
        # The sweeper reads only due rows: O(due), whatever the number of waiting instances.
        sa.Index(
            "ix_journey_instances_due",
            "next_run_at",
            sqlite_where=sa.text("next_run_at IS NOT NULL"),
            postgresql_where=sa.text("next_run_at IS NOT NULL"),
        ),
        sa.Index("ix_journey_instances_profile_state", "profile_id", "state"),
        sa.Index("ix_journey_instances_journey_step", "journey_id", "step_id", "state"),
        sa.Index(
            "ix_journey_instances_waiting_event",
            "waiting_event",
            "profile_id",
            sqlite_where=sa.text("waiting_event IS NOT NULL"),
            postgresql_where=sa.text("waiting_event IS NOT NULL"),
        ),
    )


class JourneyStepLog(db.Model):
    """What happened at each step (entered, left by which path, exited, deferred …)."""

    __tablename__ = "journey_step_log"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    instance_id: Mapped[int] = mapped_column(
        sa.ForeignKey("journey_instances.id", ondelete="CASCADE")
    )
    journey_id: Mapped[int] = mapped_column(sa.ForeignKey("journeys.id", ondelete="CASCADE"))
    version_id: Mapped[int] = mapped_column(sa.ForeignKey("journey_versions.id"))
    step_id: Mapped[str] = mapped_column(sa.String(40))
    # entered, completed, event, timeout, then, else, path:<n>, holdout, exited:<reason> …
    outcome: Mapped[str] = mapped_column(sa.String(60))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        sa.Index("ix_journey_step_log_journey_step", "journey_id", "step_id", "outcome"),
        sa.Index("ix_journey_step_log_instance", "instance_id"),
    )


class Delivery(db.Model):
    """The outbox: every side effect, written with its unique key before it is performed."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    # instance:step:visit — also sent to providers as their idempotency key.
    key: Mapped[str] = mapped_column(sa.String(160), unique=True)
    journey_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("journeys.id", ondelete="SET NULL")
    )
    version_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("journey_versions.id", ondelete="SET NULL")
    )
    instance_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("journey_instances.id", ondelete="SET NULL")
    )
    step_id: Mapped[str] = mapped_column(sa.String(40))
    profile_id: Mapped[int] = mapped_column(sa.ForeignKey("profiles.id", ondelete="CASCADE"))
    # send, issue_coupon, award_points, update_trait, webhook
    action: Mapped[str] = mapped_column(sa.String(16))
    channel: Mapped[str | None] = mapped_column(sa.String(16))
    content_version_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("content_versions.id", ondelete="SET NULL")
    )
    category: Mapped[str] = mapped_column(sa.String(16), default="service")
    status: Mapped[str] = mapped_column(sa.String(16), default="pending")
    reason: Mapped[str | None] = mapped_column(sa.String(64))
    detail: Mapped[str] = mapped_column(sa.Text, default="")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The step's parameters and journey context; the rendered message once prepared.
    payload: Mapped[dict] = mapped_column(JSONType, default=dict)
    provider_id: Mapped[str | None] = mapped_column(sa.String(128))
    response: Mapped[dict] = mapped_column(JSONType, default=dict)
    test: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        sa.Index(
            "ix_deliveries_due",
            "next_attempt_at",
            sqlite_where=sa.text("next_attempt_at IS NOT NULL"),
            postgresql_where=sa.text("next_attempt_at IS NOT NULL"),
        ),
        sa.Index("ix_deliveries_profile_created", "profile_id", "created_at"),
        # Frequency caps: marketing sends per profile and channel in a window.
        sa.Index("ix_deliveries_profile_channel_sent", "profile_id", "channel", "sent_at"),
        sa.Index("ix_deliveries_journey_step_status", "journey_id", "step_id", "status"),
        sa.Index("ix_deliveries_provider", "channel", "provider_id"),
    )


class ChannelUnreachable(db.Model):
    """A profile a provider said can no longer be reached on a channel (e.g. WeChat 43004)."""

    __tablename__ = "channel_unreachable"

    profile_id: Mapped[int] = mapped_column(
        sa.ForeignKey("profiles.id", ondelete="CASCADE"), primary_key=True
    )
    channel: Mapped[str] = mapped_column(sa.String(16), primary_key=True)
    reason: Mapped[str] = mapped_column(sa.String(200), default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class JourneyScheduleRun(db.Model):
    """A schedule trigger's slot that has fired: firing again for the same slot does nothing."""

    __tablename__ = "journey_schedule_runs"

    journey_id: Mapped[int] = mapped_column(
        sa.ForeignKey("journeys.id", ondelete="CASCADE"), primary_key=True
    )
    slot: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    entered: Mapped[int] = mapped_column(default=0)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
