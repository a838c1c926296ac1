"""Events the doctor engagement module writes on profiles (invited, registered, quiz, points).

They go through the usual outbox, so segments and journeys see them, and they are the raw
record the meeting funnel is reconciled against. The module's own event processor skips
events of this source: a registration entered by a rep is counted once.
"""

from __future__ import annotations

import logging
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from cdp.db import db, utcnow
from cdp.ingest import tasks as ingest_tasks
from cdp.models import Event, OutboxBatch, Source

log = logging.getLogger(__name__)

HCP_SOURCE_ID = "src_hcp"
INVITED = "hcp_meeting_invited"
REGISTERED = "hcp_meeting_registered"
JOINED = "hcp_meeting_joined"
LEFT = "hcp_meeting_left"
QUIZ_SUBMITTED = "hcp_quiz_submitted"
LEARNING_COMPLETED = "hcp_learning_completed"
POINTS_AWARDED = "hcp_points_awarded"
POINTS_REFUSED = "hcp_points_refused"


def _insert(model):
    name = db.session.get_bind().dialect.name
    return (postgresql.insert if name == "postgresql" else sqlite.insert)(model)


def _ensure_source() -> None:
    db.session.execute(
        _insert(Source)
        .values(
            id=HCP_SOURCE_ID,
            name="Doctor engagement (meetings, quizzes, academic points)",
            kind="internal",
            enabled=True,
            default_profile_kind="hcp",
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["id"])
    )


def emit(profile_id: int, name: str, message_id: str, properties: dict, at: datetime | None = None):
    """Store one event in the caller's transaction (once per message id); returns the outbox id."""
    _ensure_source()
    at = at or utcnow()
    row = {
        "source_id": HCP_SOURCE_ID,
        "message_id": message_id[:100],
        "profile_id": profile_id,
        "type": "track",
        "name": name,
        "timestamp": at,
        "received_at": utcnow(),
        "properties": properties,
        "context": {"channel": "internal"},
    }
    statement = (
        _insert(Event.__table__)
        .values(**row)
        .on_conflict_do_nothing(index_elements=["source_id", "message_id"])
    )
    event_id = db.session.scalar(statement.returning(Event.__table__.c.id))
    if event_id is None:
        return None  # a retried operation: the event is there already
    return db.session.scalar(
        sa.insert(OutboxBatch.__table__)
        .values(source_id=HCP_SOURCE_ID, event_ids=[event_id], profile_ids=[profile_id], attempts=0)
        .returning(OutboxBatch.__table__.c.id)
    )


def hand_off(*outbox_ids) -> None:
    """After the commit: have the events processed (segments, journeys); the sweeper is the net."""
    if not any(outbox_ids):
        return
    try:
        ingest_tasks.hand_off()
    except Exception:
        log.warning("hcp: could not queue the event hand-off; the sweeper will")
