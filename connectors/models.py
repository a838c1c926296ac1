"""Connector state: pull cursors, cached API tokens, replay nonces, mini-program sessions,
recent errors and per-source counters (what the source health view shows).

Events themselves are deduplicated by the pipeline on ``(source_id, message_id)``; nothing
here duplicates that. Every table hangs off ``sources`` (rows go with their source), and
mini-program sessions off the profile they log in (an erasure removes them).
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from cdp.db import BigIntPK, JSONType, UTCDateTime, db, utcnow

CURSOR_STATES = ("idle", "running", "paused", "failed")


def _source_fk():
    return sa.ForeignKey("sources.id", ondelete="CASCADE")


class ConnectorCursor(db.Model):
    """Where a pull job of a source stands, so a failed or interrupted run resumes there."""

    __tablename__ = "connector_cursors"

    source_id: Mapped[str] = mapped_column(_source_fk(), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(32), primary_key=True)  # "followers", "orders"
    position: Mapped[dict] = mapped_column(JSONType, default=dict)
    status: Mapped[str] = mapped_column(sa.String(16), default="idle")
    runs: Mapped[int] = mapped_column(default=0)
    job_id: Mapped[int | None] = mapped_column(sa.ForeignKey("job_runs.id", ondelete="SET NULL"))
    last_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str] = mapped_column(sa.String(500), default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        sa.CheckConstraint(
            "status IN ('idle', 'running', 'paused', 'failed')", name="status_known"
        ),
    )


class ConnectorToken(db.Model):
    """A provider access token shared by every process (one per app id), stored encrypted."""

    __tablename__ = "connector_tokens"

    app_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    token_encrypted: Mapped[bytes] = mapped_column(sa.LargeBinary)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    fetched_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # force_refresh of stable_token is limited (20 a day, 30 s apart): count them per day.
    forced_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    forced_today: Mapped[int] = mapped_column(default=0)


class ConnectorNonce(db.Model):
    """A nonce a signed request used; a second request with it inside the window is a replay."""

    __tablename__ = "connector_nonces"

    source_id: Mapped[str] = mapped_column(_source_fk(), primary_key=True)
    nonce: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class MiniprogramSession(db.Model):
    """A mini-program login (code2Session): the token we hand out names this row.

    ``session_key`` is never stored or returned: phone numbers come from the phone API's
    one-time code, so nothing needs it.
    """

    __tablename__ = "miniprogram_sessions"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    source_id: Mapped[str] = mapped_column(_source_fk())
    openid: Mapped[str] = mapped_column(sa.String(64))
    unionid: Mapped[str | None] = mapped_column(sa.String(64))
    profile_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("profiles.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (sa.Index("ix_miniprogram_sessions_source_openid", "source_id", "openid"),)


class ConnectorError(db.Model):
    """A refused request or failed pull step, with its payload masked (the newest few kept)."""

    __tablename__ = "connector_errors"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    source_id: Mapped[str] = mapped_column(_source_fk())
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    status: Mapped[int] = mapped_column(default=0)  # HTTP status, or 0 for a pull error
    reason: Mapped[str] = mapped_column(sa.String(500))
    payload_masked: Mapped[str] = mapped_column(sa.Text, default="")

    __table_args__ = (sa.Index("ix_connector_errors_source_id", "source_id", "id"),)


class ConnectorStat(db.Model):
    """Counters per source and five-minute bucket, flushed from each process's memory."""

    __tablename__ = "connector_stats"

    source_id: Mapped[str] = mapped_column(_source_fk(), primary_key=True)
    bucket: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    requests: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    events: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    duplicates: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    rejected: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    errors: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    last_event_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
