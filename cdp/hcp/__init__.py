"""Doctor (HCP) engagement: master data and tiers, meetings, quizzes, knowledge, academic points.

``init_app`` is called by the app factory: it registers the event processor that turns the
doctors' registrations, join/leave marks and quiz answers into attendance and knowledge, and
the erasure hook that forgets an erased doctor as a meeting's speaker.
"""

from __future__ import annotations

import sqlalchemy as sa

from cdp.db import db
from cdp.hcp.processor import process_events
from cdp.ingest.tasks import register_event_processor
from cdp.models.hcp import Meeting
from cdp.privacy.erasure import register_erasure_hook


def forget_speaker(profile_ids: list[int], _event_ids: list[int]) -> int:
    """Erasure: the meeting stays (others attended it); who spoke at it is forgotten."""
    result = db.session.execute(
        sa.update(Meeting)
        .where(Meeting.speaker_profile_id.in_(profile_ids))
        .values(speaker_profile_id=None, speaker_name="")
    )
    return result.rowcount


def init_app(app) -> None:
    register_event_processor("hcp", process_events)
    register_erasure_hook("hcp-speakers", forget_speaker)
