"""Meetings and courses (approved HCP content only), their quiz, and invitations.

An invitation comes from a journey step (``invite_from_journey``) or from a rep's request
that a manager approves (``request_invitations`` then ``decide``); a manager's own request
is an invitation at once. Nobody approves a request they made themselves.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from cdp import audit
from cdp.actors import Actor
from cdp.auth.permissions import allowed, require
from cdp.content.guards import journey_content_problems
from cdp.content.library import get_version, local_date
from cdp.db import db, transaction, utcnow
from cdp.exceptions import Conflict, NotFound, PermissionDenied, ValidationFailed
from cdp.hcp import events
from cdp.hcp.doctors import check_owner, doctor, master
from cdp.loyalty.common import setting as loyalty_setting
from cdp.models.content import ContentItem, ContentVersion
from cdp.models.hcp import MEETING_KINDS, Meeting, Participant

TEXT_LIMITS = {
    "topic": 200,
    "product": 100,
    "therapeutic_area": 100,
    "campaign": 100,
    "speaker_name": 120,
}
MAX_INVITES = 500


def get_meeting(meeting_id: int) -> Meeting:
    meeting = db.session.get(Meeting, meeting_id) if isinstance(meeting_id, int) else None
    if meeting is None:
        raise NotFound("no such meeting", "meeting_id")
    return meeting


def approved_hcp_version(content_version_id=None, content_id=None) -> ContentVersion:
    """The content a meeting presents: an approved, unexpired version meant for doctors."""
    if content_version_id is None and content_id is not None:
        if isinstance(content_id, bool) or not isinstance(content_id, int):
            raise ValidationFailed("content_id must be a content item id", "content_id")
        content_version_id = db.session.scalar(
            sa.select(ContentVersion.id)
            .where(
                ContentVersion.item_id == content_id,
                ContentVersion.status == "approved",
                ContentVersion.expires_on >= local_date(utcnow()),
            )
            .order_by(ContentVersion.number.desc())
            .limit(1)
        )
        if content_version_id is None:
            raise ValidationFailed(
                "the content item has no approved, unexpired version", "content_id"
            )
    if isinstance(content_version_id, bool) or not isinstance(content_version_id, int):
        raise ValidationFailed(
            "content_version_id (or content_id) is required", "content_version_id"
        )
    try:
        version = get_version(content_version_id)
    except NotFound:
        raise ValidationFailed("no such content version", "content_version_id") from None
    problems = journey_content_problems(version, "hcp")
    if version.audience not in ("hcp", "both"):
        problems.append(("audience_mismatch", "the content is not meant for doctors"))
    if problems:
        raise ValidationFailed(
            f"meetings use approved HCP content only: {problems[0][1]}", "content_version_id"
        )
    return version


def hcp_content() -> list[tuple[ContentVersion, ContentItem]]:
    """Approved, unexpired versions meant for doctors: what a meeting may present."""
    rows = db.session.execute(
        sa.select(ContentVersion, ContentItem)
        .join(ContentItem, ContentItem.id == ContentVersion.item_id)
        .where(
            ContentVersion.status == "approved",
            ContentVersion.audience.in_(("hcp", "both")),
            ContentVersion.expires_on >= local_date(utcnow()),
        )
        .order_by(ContentItem.name, ContentVersion.number.desc())
    )
    return [tuple(row) for row in rows]


def _texts(data: dict) -> dict:
    clean = {}
    for name, limit in TEXT_LIMITS.items():
        if name in data:
            value = data[name] if data[name] is not None else ""
            if not isinstance(value, str) or len(value.strip()) > limit:
                raise ValidationFailed(f"{name} must be text of at most {limit}", name)
            clean[name] = value.strip()
    if "kind" in data:
        if data["kind"] not in MEETING_KINDS:
            raise ValidationFailed(f"kind must be one of {', '.join(MEETING_KINDS)}", "kind")
        clean["kind"] = data["kind"]
    return clean


def _times(data: dict, meeting: Meeting | None) -> dict:
    clean = {}
    for name in ("starts_at", "ends_at"):
        value = data.get(name)
        if value is not None and (not isinstance(value, datetime) or value.tzinfo is None):
            raise ValidationFailed(f"{name} must be a date-time with a time zone", name)
        if name in data and (value is not None or name == "ends_at"):
            clean[name] = value
    starts = clean.get("starts_at", meeting.starts_at if meeting else None)
    ends = clean.get("ends_at", meeting.ends_at if meeting else None)
    if starts is None:
        raise ValidationFailed("starts_at is required", "starts_at")
    if ends is not None and ends <= starts:
        raise ValidationFailed("ends_at must be after starts_at", "ends_at")
    return clean


def _rules(data: dict) -> dict:
    clean = {}
    if "min_minutes" in data:
        value = data["min_minutes"]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 600:
            raise ValidationFailed("min_minutes must be 1 to 600", "min_minutes")
        clean["min_minutes"] = value
    if "points_action" in data:
        action = data["points_action"]
        educational = loyalty_setting("LOYALTY_HCP_ACTIONS")
        if action not in educational or action not in loyalty_setting("LOYALTY_ACTION_POINTS"):
            raise ValidationFailed(
                "points_action must be an educational points action for doctors "
                f"({', '.join(educational)})",
                "points_action",
            )
        clean["points_action"] = action
    if data.get("speaker_profile_id") is not None:
        clean["speaker_profile_id"] = doctor(data["speaker_profile_id"]).id
    elif "speaker_profile_id" in data:
        clean["speaker_profile_id"] = None
    return clean


def _clean(data: dict, meeting: Meeting | None) -> dict:
    clean = {**_texts(data), **_times(data, meeting), **_rules(data)}
    if meeting is None and not clean.get("topic"):
        raise ValidationFailed("topic is required", "topic")
    if "content_version_id" in data or "content_id" in data:
        version = approved_hcp_version(data.get("content_version_id"), data.get("content_id"))
        clean["content_version_id"] = version.id
    elif meeting is None:
        raise ValidationFailed("content_version_id (or content_id) is required", "content_id")
    return clean


def create_meeting(actor: Actor, data: dict) -> Meeting:
    """Plan a meeting or course on approved HCP content (the quiz is set separately)."""
    require(actor, "hcp:edit")
    clean = _clean(data, None)
    with transaction():
        meeting = Meeting(**clean, quiz=[], status="scheduled", created_by_id=actor.user_id)
        db.session.add(meeting)
        db.session.flush()
        audit.record(
            actor,
            "hcp.meeting_create",
            "hcp_meeting",
            meeting.id,
            content_version_id=meeting.content_version_id,
        )
    return meeting


def update_meeting(actor: Actor, meeting_id: int, data: dict) -> Meeting:
    """Change a meeting; new content is checked again (approved HCP content only)."""
    require(actor, "hcp:edit")
    with transaction():
        meeting = get_meeting(meeting_id)
        clean = _clean(data, meeting)
        for name, value in clean.items():
            setattr(meeting, name, value)
        meeting.updated_at = utcnow()
        audit.record(actor, "hcp.meeting_update", "hcp_meeting", meeting.id, fields=sorted(clean))
    return meeting


def cancel_meeting(actor: Actor, meeting_id: int) -> Meeting:
    require(actor, "hcp:edit")
    with transaction():
        meeting = get_meeting(meeting_id)
        meeting.status, meeting.updated_at = "cancelled", utcnow()
        audit.record(actor, "hcp.meeting_cancel", "hcp_meeting", meeting.id)
    return meeting


# --- invitations ------------------------------------------------------------------------------


def open_for_invitations(meeting: Meeting, at: datetime | None = None) -> str | None:
    """Why nobody can be invited now (None: they can)."""
    if meeting.status != "scheduled":
        return "the meeting was cancelled"
    if meeting.ends_at is not None and meeting.ends_at <= (at or utcnow()):
        return "the meeting is over"
    return None


def participant(meeting_id: int, profile_id: int) -> Participant:
    """The (meeting, doctor) row, created on first use in the caller's transaction."""
    row = db.session.scalar(
        sa.select(Participant).where(
            Participant.meeting_id == meeting_id, Participant.profile_id == profile_id
        )
    )
    if row is None:
        row = Participant(
            meeting_id=meeting_id,
            profile_id=profile_id,
            attended_seconds=0,
            request_note="",
            updated_at=utcnow(),
        )
        db.session.add(row)
        db.session.flush()
    return row


def _invite(row: Participant, via: str, at: datetime, decided_by: int | None = None):
    row.invitation, row.invited_via, row.invited_at, row.updated_at = "invited", via, at, at
    if decided_by is not None:
        row.decided_by_id, row.decided_at = decided_by, at
    props = {"meeting_id": row.meeting_id, "via": via}
    message_id = f"invited:{row.meeting_id}:{row.profile_id}"
    return events.emit(row.profile_id, events.INVITED, message_id, props, at)


def request_invitations(actor: Actor, meeting_id: int, profile_ids, note: str = "") -> list:
    """A rep asks to invite their doctors (pending a manager); a manager invites at once."""
    require(actor, "hcp:edit")
    if not isinstance(profile_ids, list) or not 1 <= len(profile_ids) <= MAX_INVITES:
        raise ValidationFailed(f"profile_ids must list 1 to {MAX_INVITES} doctors", "profile_ids")
    note = (note or "").strip()[:200]
    approver = allowed(actor.role, "hcp:approve")
    now, outboxes, rows = utcnow(), [], []
    with transaction():
        meeting = get_meeting(meeting_id)
        why = open_for_invitations(meeting, now)
        if why:
            raise Conflict(why, "meeting_id")
        for profile_id in dict.fromkeys(profile_ids):
            check_owner(actor, master(profile_id))
            row = participant(meeting.id, doctor(profile_id).id)
            if row.invitation == "invited":
                rows.append(row)
                continue
            row.requested_by_id, row.requested_at, row.request_note = actor.user_id, now, note
            if approver:
                outboxes.append(_invite(row, "manager", now, decided_by=actor.user_id))
            else:
                row.invitation, row.decided_by_id, row.decided_at = "requested", None, None
            rows.append(row)
        audit.record(
            actor,
            "hcp.invitations_requested",
            "hcp_meeting",
            meeting.id,
            profiles=len(rows),
            direct=approver,
        )
    events.hand_off(*outboxes)
    return rows


def decide(actor: Actor, participant_id: int, approve: bool, note: str = "") -> Participant:
    """A manager approves or rejects a rep's invitation request (never their own)."""
    require(actor, "hcp:approve")
    now, outbox = utcnow(), None
    with transaction():
        row = (
            db.session.get(Participant, participant_id) if isinstance(participant_id, int) else None
        )
        if row is None:
            raise NotFound("no such invitation request", "participant_id")
        if row.invitation != "requested":
            raise Conflict("this request was decided already", "participant_id")
        if row.requested_by_id is not None and row.requested_by_id == actor.user_id:
            raise PermissionDenied("nobody approves their own invitation request")
        if approve:
            why = open_for_invitations(get_meeting(row.meeting_id), now)
            if why:
                raise Conflict(why, "meeting_id")
            outbox = _invite(row, "rep", now, decided_by=actor.user_id)
        else:
            row.invitation, row.decided_by_id, row.decided_at = "rejected", actor.user_id, now
            row.updated_at = now
        if note:
            row.request_note = f"{row.request_note} | {note.strip()}"[:200]
        audit.record(
            actor,
            "hcp.invitation_" + ("approved" if approve else "rejected"),
            "hcp_meeting",
            row.meeting_id,
            profile_id=row.profile_id,
        )
    events.hand_off(outbox)
    return row


def invite_from_journey(profile_id: int, meeting_id: int, key: str) -> Participant:
    """A journey's invite_to_meeting step: invite the doctor (once; no approval needed, the
    journey was published). Raises Conflict / ValidationFailed when it cannot."""
    now = utcnow()
    with transaction():
        meeting = get_meeting(meeting_id)
        why = open_for_invitations(meeting, now)
        if why:
            raise Conflict(why, "meeting_id")
        row = participant(meeting.id, doctor(profile_id).id)
        outbox = None
        if row.invitation != "invited":
            row.journey_key = key[:128]
            outbox = _invite(row, "journey", now)
    events.hand_off(outbox)
    return row


def pending_requests(actor: Actor, limit: int = 200) -> list[tuple[Participant, Meeting]]:
    """Invitation requests waiting for a manager, oldest first."""
    require(actor, "hcp:approve")
    return [
        tuple(row)
        for row in db.session.execute(
            sa.select(Participant, Meeting)
            .join(Meeting, Meeting.id == Participant.meeting_id)
            .where(Participant.invitation == "requested")
            .order_by(Participant.requested_at, Participant.id)
            .limit(limit)
        )
    ]


def list_meetings(campaign: str | None = None, limit: int = 200) -> list[Meeting]:
    query = sa.select(Meeting).order_by(Meeting.starts_at.desc()).limit(limit)
    if campaign:
        query = query.where(Meeting.campaign == campaign)
    return list(db.session.scalars(query))


def campaigns() -> list[str]:
    return list(
        db.session.scalars(
            sa.select(Meeting.campaign)
            .where(Meeting.campaign != "")
            .distinct()
            .order_by(Meeting.campaign)
        )
    )
