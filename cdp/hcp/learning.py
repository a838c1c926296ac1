"""Registration and attendance: minutes watched from join/leave events, and completion.

Attendance is always recomputed from the raw ``hcp_meeting_joined`` / ``hcp_meeting_left``
events of the doctor for that meeting, so replays, duplicates and late events give the same
answer: the union of joined intervals (two devices count once), from the meeting's start,
an open interval closed by the meeting's end once it is over. Learning is complete when the
minutes reach the meeting's minimum and the quiz was submitted.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from cdp import audit
from cdp.actors import Actor
from cdp.auth.permissions import require
from cdp.db import db, transaction, utcnow
from cdp.exceptions import Conflict
from cdp.hcp import events
from cdp.hcp.doctors import check_owner, master, refresh
from cdp.hcp.meetings import get_meeting, participant
from cdp.models import Event
from cdp.models.hcp import Meeting, Participant, QuizSubmission
from cdp.profiles import profile_family


def meeting_of(properties: dict | None) -> int | None:
    """The meeting id an event names (``properties.meeting_id``, number or digits)."""
    value = (properties or {}).get("meeting_id")
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


# --- registration and attendance --------------------------------------------------------------


def record_registration(meeting_id: int, profile_id: int, at: datetime) -> Participant:
    row = participant(meeting_id, profile_id)
    if row.registered_at is None or at < row.registered_at:
        row.registered_at, row.updated_at = at, utcnow()
    return row


def register(actor: Actor, meeting_id: int, profile_id: int) -> Participant:
    """Register a doctor (a rep taking the registration by phone); the mini-program sends
    ``hcp_meeting_registered`` events instead."""
    require(actor, "hcp:edit")
    now = utcnow()
    with transaction():
        meeting = get_meeting(meeting_id)
        if meeting.status != "scheduled":
            raise Conflict("the meeting was cancelled", "meeting_id")
        row = master(profile_id)
        check_owner(actor, row)
        found = record_registration(meeting.id, row.profile_id, now)
        outbox = events.emit(
            row.profile_id,
            events.REGISTERED,
            f"registered:{meeting.id}:{row.profile_id}",
            {"meeting_id": meeting.id},
            now,
        )
        audit.record(actor, "hcp.registered", "hcp_meeting", meeting.id, profile_id=row.profile_id)
    events.hand_off(outbox)
    return found


def watched(meeting: Meeting, marks: list[tuple[datetime, str]], now: datetime):
    """(seconds watched, first join) from (time, joined|left) marks of one doctor."""
    start, depth, total, first = None, 0, 0.0, None
    floor = meeting.starts_at
    ceiling = meeting.ends_at

    def span(a: datetime, b: datetime) -> float:
        a = max(a, floor)
        b = min(b, ceiling) if ceiling is not None else b
        return max((b - a).total_seconds(), 0.0)

    for at, name in sorted(marks, key=lambda m: (m[0], m[1] != events.JOINED)):
        if name == events.JOINED:
            first = first or at
            if depth == 0:
                start = at
            depth += 1
        elif depth > 0:  # a leave with no join before it tells nothing
            depth -= 1
            if depth == 0:
                total += span(start, at)
    if depth > 0 and ceiling is not None and ceiling <= now:
        total += span(start, ceiling)  # the stream ended: whoever was still in left then
    return int(total), first


def attendance_marks(meeting_id: int, profile_id: int) -> list[tuple[datetime, str]]:
    """Join/leave marks of a doctor (and the profiles merged into them) for one meeting."""
    rows = db.session.execute(
        sa.select(Event.timestamp, Event.name, Event.properties).where(
            Event.profile_id.in_(profile_family(profile_id)),
            Event.name.in_((events.JOINED, events.LEFT)),
        )
    )
    return [(at, name) for at, name, props in rows if meeting_of(props) == meeting_id]


def update_progress(meeting: Meeting, profile_id: int, now: datetime | None = None) -> bool:
    """Recompute minutes watched and completion; True when the learning became complete (an
    ``hcp_learning_completed`` event is then written: call ``events.hand_off`` after commit)."""
    now = now or utcnow()
    row = participant(meeting.id, profile_id)
    seconds, first = watched(meeting, attendance_marks(meeting.id, profile_id), now)
    if (seconds, first) != (row.attended_seconds, row.first_joined_at):
        row.attended_seconds, row.first_joined_at, row.updated_at = seconds, first, now
    if row.completed_at is not None:
        return False
    quizzed = db.session.scalar(
        sa.select(QuizSubmission.id).where(
            QuizSubmission.meeting_id == meeting.id, QuizSubmission.profile_id == profile_id
        )
    )
    if quizzed is None or seconds < meeting.min_minutes * 60:
        return False
    row.completed_at = now
    refresh(master(profile_id))  # completed meetings count for the KOI tier
    # For journeys (wait_for_event) and segments; handed off by the caller after its commit.
    events.emit(profile_id, events.LEARNING_COMPLETED, f"completed:{meeting.id}:{profile_id}",
                {"meeting_id": meeting.id, "minutes": seconds // 60,
                 "content_version_id": meeting.content_version_id}, now)  # fmt: skip
    return True
