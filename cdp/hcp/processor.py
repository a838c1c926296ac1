"""The ingest event processor: registrations, join/leave marks and quiz answers of doctors.

Events come from the doctors' mini-program or a live-stream platform's webhook (through the
tracking API or a connector), each with ``properties.meeting_id``:

| event | effect |
|---|---|
| ``hcp_meeting_registered`` | the doctor registered (earliest time kept) |
| ``hcp_meeting_joined`` / ``hcp_meeting_left`` | minutes watched recomputed from all marks |
| ``hcp_quiz_submitted`` with ``answers: {question id: option index(es)}`` | scored (first one) |

``identify`` events of doctors fill blank master data from ``hospital``, ``department`` and
``title`` traits. A doctor who completes a meeting (minutes + quiz) is awarded its points.
Idempotent: attendance is recomputed from the raw events, the first quiz counts, an award is
made once. Events this module wrote itself (source ``src_hcp``) are skipped.
"""

from __future__ import annotations

import sqlalchemy as sa

from cdp.actors import Actor
from cdp.db import db, utcnow
from cdp.hcp import events
from cdp.hcp.academic import award_quietly
from cdp.hcp.doctors import master, refresh
from cdp.hcp.learning import meeting_of, record_registration, update_progress
from cdp.hcp.quizzes import record_submission
from cdp.models import Event, Profile
from cdp.models.hcp import TITLES, Award, Meeting, Participant
from cdp.profiles import live_profile_id

ACTOR = Actor(kind="system", role="admin", request_id="hcp-events")
NAMES = (events.REGISTERED, events.JOINED, events.LEFT, events.QUIZ_SUBMITTED)
_CHUNK = 500


def _doctor_id(profile_id: int | None, kinds: dict[int, str]) -> int | None:
    live = live_profile_id(profile_id) if profile_id is not None else None
    if live is None:
        return None
    if live not in kinds:
        kinds[live] = db.session.scalar(sa.select(Profile.kind).where(Profile.id == live))
    return live if kinds[live] == "hcp" else None


def _master_data(event: Event, profile_id: int) -> None:
    traits = (event.properties or {}).get("traits") or {}
    wanted = {k: traits.get(k) for k in ("hospital", "department", "title")}
    if not any(isinstance(v, str) and v.strip() for v in wanted.values()):
        return
    row = master(profile_id)
    changed = False
    for name, value in wanted.items():
        if not isinstance(value, str) or not value.strip() or getattr(row, name):
            continue  # what a rep or an earlier event set stays
        if name == "title" and value.strip() not in TITLES:
            continue
        setattr(row, name, value.strip()[: 200 if name == "hospital" else 100])
        changed = True
    if changed:
        refresh(row)


def process_events(event_ids: list[int], profile_ids: list[int]) -> int:
    """Apply a batch's doctor events; award points to those who completed; returns how many."""
    kinds: dict[int, str] = {}
    meetings: dict[int, Meeting | None] = {}
    touched: set[tuple[int, int]] = set()
    applied = 0
    for start in range(0, len(event_ids), _CHUNK):
        chunk = event_ids[start : start + _CHUNK]
        rows = db.session.scalars(
            sa.select(Event)
            .where(
                Event.id.in_(chunk),
                Event.source_id != events.HCP_SOURCE_ID,
                sa.or_(Event.name.in_(NAMES), Event.type == "identify"),
            )
            .order_by(Event.timestamp, Event.id)
        ).all()
        for event in rows:
            profile_id = _doctor_id(event.profile_id, kinds)
            if profile_id is None:
                continue
            if event.type == "identify":
                _master_data(event, profile_id)
                continue
            meeting_id = meeting_of(event.properties)
            if meeting_id not in meetings:
                meetings[meeting_id] = db.session.get(Meeting, meeting_id) if meeting_id else None
            meeting = meetings[meeting_id]
            if meeting is None:
                continue
            if event.name == events.REGISTERED:
                record_registration(meeting.id, profile_id, event.timestamp)
            elif event.name == events.QUIZ_SUBMITTED:
                answers = (event.properties or {}).get("answers")
                answers = answers if isinstance(answers, dict) else {}
                record_submission(meeting, profile_id, answers, event.timestamp, event.id)
            touched.add((meeting.id, profile_id))
            applied += 1
    completed = [
        update_progress(meetings[meeting_id], profile_id, utcnow())
        for meeting_id, profile_id in sorted(touched)
    ]
    db.session.commit()  # the ledger runs its own transactions: ours must be done first
    events.hand_off(any(completed))
    for meeting_id, profile_id in _unawarded(touched):
        award_quietly(ACTOR, meeting_id, profile_id)
    return applied


def _unawarded(pairs: set[tuple[int, int]]) -> list[tuple[int, int]]:
    """Completed (meeting, doctor) pairs with no award or refusal yet (also after a crash)."""
    found = []
    for meeting_id, profile_id in sorted(pairs):
        row = db.session.execute(
            sa.select(Participant.completed_at, Award.id)
            .outerjoin(
                Award,
                sa.and_(
                    Award.meeting_id == Participant.meeting_id,
                    Award.profile_id == Participant.profile_id,
                ),
            )
            .where(Participant.meeting_id == meeting_id, Participant.profile_id == profile_id)
        ).first()
        if row is not None and row[0] is not None and row[1] is None:
            found.append((meeting_id, profile_id))
    return found
