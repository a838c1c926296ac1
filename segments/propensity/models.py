"""Propensity models, their trained versions (one active per model) and stored scores."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from cdp.db import JSONType, UTCDateTime, db, utcnow

ALGORITHMS = ("hgb", "logistic")


class PropensityModel(db.Model):
    """A named question ("who does <target event> within <horizon> days"), versions under it."""

    __tablename__ = "propensity_models"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(80))
    description: Mapped[str] = mapped_column(sa.Text, default="")
    # The question every version of the model answers (retraining keeps it).
    target_event: Mapped[str] = mapped_column(sa.String(200))
    target_where: Mapped[list] = mapped_column(JSONType, default=list)
    horizon_days: Mapped[int]
    profile_kind: Mapped[str] = mapped_column(sa.String(16))
    # Hours between scheduled rescoring of the active version; None: only on demand.
    rescore_hours: Mapped[int | None] = mapped_column(default=24)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL")
    )

    __table_args__ = (sa.UniqueConstraint("name"),)


class ModelVersion(db.Model):
    """One training run that succeeded: what it was given, what it measured, where it lives.

    Rows are written only after the fitted pipeline is safely on disk, so a failed training
    leaves nothing behind. ``artifact_sha256`` is checked before the file is ever loaded.
    """

    __tablename__ = "model_versions"

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(sa.ForeignKey("propensity_models.id", ondelete="CASCADE"))
    version: Mapped[int]
    active: Mapped[bool] = mapped_column(default=False)
    algorithm: Mapped[str] = mapped_column(sa.String(16))
    params: Mapped[dict] = mapped_column(JSONType, default=dict)
    features: Mapped[list] = mapped_column(JSONType, default=list)
    # {"model": {...}, "baseline": {...}, "lift": [...], "calibration": [...], "importances": [...]}
    metrics: Mapped[dict] = mapped_column(JSONType, default=dict)
    beats_baseline: Mapped[bool] = mapped_column(default=False)
    # Trained on medicine purchases: scores count only for profiles with health-data consent.
    health_data: Mapped[bool] = mapped_column(default=False)
    cutoff: Mapped[datetime] = mapped_column(UTCDateTime)
    training_window: Mapped[dict] = mapped_column(JSONType, default=dict)
    data_size: Mapped[dict] = mapped_column(JSONType, default=dict)
    artifact_path: Mapped[str] = mapped_column(sa.String(500))
    artifact_sha256: Mapped[str] = mapped_column(sa.String(64))
    artifact_bytes: Mapped[int] = mapped_column(sa.BigInteger)
    train_seconds: Mapped[float] = mapped_column(default=0.0)
    trained_by: Mapped[str] = mapped_column(sa.String(120))
    trained_by_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The last stored scoring: when it ran, the instant its features were taken, how many.
    scored_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    scored_as_of: Mapped[datetime | None] = mapped_column(UTCDateTime)
    scored_count: Mapped[int] = mapped_column(sa.BigInteger, default=0)

    __table_args__ = (
        sa.UniqueConstraint("model_id", "version"),
        sa.CheckConstraint("algorithm IN ('hgb', 'logistic')", name="algorithm_known"),
        # At most one active version per model.
        sa.Index(
            "uq_model_versions_active",
            "model_id",
            unique=True,
            sqlite_where=sa.text("active"),
            postgresql_where=sa.text("active"),
        ),
    )


class PropensityScore(db.Model):
    """A profile's score under a model version: probability, rank (1 = highest) and decile.

    Deciles run 1 (the top 10 %) to 10; ``rank`` breaks ties by profile id, so "top N %"
    is exactly ``rank * 100 <= N * scored_count``.
    """

    __tablename__ = "propensity_scores"

    model_version_id: Mapped[int] = mapped_column(
        sa.ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True
    )
    profile_id: Mapped[int] = mapped_column(
        sa.ForeignKey("profiles.id", ondelete="CASCADE"), primary_key=True
    )
    score: Mapped[float]
    rank: Mapped[int] = mapped_column(sa.BigInteger)
    decile: Mapped[int] = mapped_column(sa.SmallInteger)

    __table_args__ = (
        # Threshold conditions (score >= t) and top-N conditions (rank <= k) read these.
        sa.Index("ix_propensity_scores_version_score", "model_version_id", "score"),
        sa.Index("ix_propensity_scores_version_rank", "model_version_id", "rank"),
        sa.Index("ix_propensity_scores_profile", "profile_id"),
    )
