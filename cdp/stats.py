"""Headline figures for the dashboard, each one aggregate query pushed down to SQL."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from cdp.db import db, utcnow
from cdp.models import Event, JobRun, Profile, Source, User


def overview(days: int = 30) -> dict:
    """Profiles by kind, events by channel in the last ``days``, and object counts."""
    session = db.session
    by_kind = dict(
        session.execute(
            sa.select(Profile.kind, sa.func.count())
            .where(Profile.merged_into_id.is_(None))
            .group_by(Profile.kind)
        ).all()
    )
    since = utcnow() - timedelta(days=days)
    by_channel = dict(
        session.execute(
            sa.select(Source.kind, sa.func.count(Event.id))
            .join(Event, Event.source_id == Source.id)
            .where(Event.timestamp >= since)
            .group_by(Source.kind)
        ).all()
    )
    return {
        "patients": by_kind.get("patient", 0),
        "doctors": by_kind.get("hcp", 0),
        "events_by_channel": by_channel,
        "events_recent": sum(by_channel.values()),
        "days": days,
        "sources": session.scalar(sa.select(sa.func.count()).select_from(Source)),
        "users": session.scalar(sa.select(sa.func.count()).select_from(User)),
        "jobs_running": session.scalar(
            sa.select(sa.func.count()).select_from(JobRun).where(JobRun.status == "running")
        ),
    }
