"""Academic points: awarded for completed learning, within the annual cap, spent on the catalogue.

Points come only from a completed meeting (minutes watched at or above its minimum and the
quiz submitted), never from prescriptions or sales, only to verified doctors, through the
loyalty ledger (``earn_action``: the HCP annual cap, idempotent per meeting and doctor).
Every award or refusal is a row naming the meeting and the content version it presented,
and an audit entry. Points are spent only on approved items of the academic catalogue.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa

from cdp import audit
from cdp.actors import Actor
from cdp.auth.permissions import require
from cdp.db import db, transaction, utcnow
from cdp.exceptions import CdpError, Conflict, NotFound, PermissionDenied, ValidationFailed
from cdp.hcp import events
from cdp.hcp.doctors import check_owner, master
from cdp.hcp.meetings import get_meeting, participant
from cdp.loyalty import points as ledger_points
from cdp.models.hcp import AcademicItem, Award, Redemption

log = logging.getLogger(__name__)
# The ledger's own permission check is for staff; these operations check hcp:* themselves.
LEDGER_ACTOR = Actor(kind="system", role="admin", request_id="hcp-points")
ITEM_KINDS = ("book", "journal", "conference", "course", "database")


def _record(
    meeting,
    profile_id: int,
    status: str,
    points: int = 0,
    reason: str = "",
    entry_id: int | None = None,
) -> Award:
    award = db.session.scalar(
        sa.select(Award).where(Award.meeting_id == meeting.id, Award.profile_id == profile_id)
    )
    if award is None:
        award = Award(meeting_id=meeting.id, profile_id=profile_id)
        db.session.add(award)
    award.content_version_id = meeting.content_version_id
    award.status, award.points, award.reason = status, points, reason[:300]
    award.points_entry_id, award.updated_at = entry_id, utcnow()
    db.session.flush()
    return award


def _refuse(actor: Actor, meeting, profile_id: int, code: str, message: str) -> Award:
    """Record and audit a refusal in its own transaction (the caller then raises)."""
    with transaction():
        award = _record(meeting, profile_id, "refused", reason=f"{code}: {message}")
        outbox = events.emit(
            profile_id,
            events.POINTS_REFUSED,
            f"refused:{meeting.id}:{profile_id}:{code}",
            {
                "meeting_id": meeting.id,
                "content_version_id": meeting.content_version_id,
                "reason": code,
            },
        )
        audit.record(
            actor,
            "hcp.points_refused",
            "profile",
            profile_id,
            outcome="refused",
            meeting_id=meeting.id,
            content_version_id=meeting.content_version_id,
            reason=code,
        )
    events.hand_off(outbox)
    return award


def award_completion(actor: Actor, meeting_id: int, profile_id: int) -> Award:
    """Award the meeting's academic points to a doctor who completed it (once).

    :raise PermissionDenied: the doctor is not verified (refusal recorded and audited).
    :raise Conflict: the learning is not complete, or the annual cap would be exceeded
        (refusal recorded and audited).
    """
    require(actor, "hcp:edit")
    meeting = get_meeting(meeting_id)
    row = master(profile_id)
    check_owner(actor, row)
    done = db.session.scalar(
        sa.select(Award).where(Award.meeting_id == meeting.id, Award.profile_id == row.profile_id)
    )
    if done is not None and done.status == "awarded":
        return done
    if participant(meeting.id, row.profile_id).completed_at is None:
        raise Conflict("the doctor has not completed this meeting (minutes and quiz)", "meeting_id")
    if row.verification != "verified":
        _refuse(actor, meeting, row.profile_id, "not_verified", "the doctor is not verified")
        raise PermissionDenied("academic points go to verified doctors only")
    key = f"hcp-meeting:{meeting.id}:{row.profile_id}"
    try:
        result = ledger_points.earn_action(LEDGER_ACTOR, row.profile_id, meeting.points_action, key)
    except Conflict as refused:  # the annual cap; the ledger audited its side already
        _refuse(actor, meeting, row.profile_id, "annual_cap", refused.message)
        raise
    with transaction():
        award = _record(
            meeting, row.profile_id, "awarded", result.entry.points, entry_id=result.entry.id
        )
        outbox = events.emit(
            row.profile_id,
            events.POINTS_AWARDED,
            f"awarded:{meeting.id}:{row.profile_id}",
            {
                "meeting_id": meeting.id,
                "points": result.entry.points,
                "content_version_id": meeting.content_version_id,
                "entry_id": result.entry.id,
            },
        )
        audit.record(
            actor,
            "hcp.points_awarded",
            "profile",
            row.profile_id,
            meeting_id=meeting.id,
            content_version_id=meeting.content_version_id,
            points=result.entry.points,
            entry=result.entry.id,
        )
    events.hand_off(outbox)
    return award


def award_quietly(actor: Actor, meeting_id: int, profile_id: int) -> Award | None:
    """After a completion: award, or leave the recorded refusal (cap, not verified) be."""
    try:
        return award_completion(actor, meeting_id, profile_id)
    except CdpError as refused:
        db.session.rollback()
        log.info("hcp: no points for %s at meeting %s: %s", profile_id, meeting_id, refused)
        return None


# --- the academic catalogue and redemptions ---------------------------------------------------


def get_item(item_id: int) -> AcademicItem:
    item = db.session.get(AcademicItem, item_id) if isinstance(item_id, int) else None
    if item is None:
        raise NotFound("no such academic item", "item_id")
    return item


def create_item(actor: Actor, code: str, name: str, kind: str, points: int) -> AcademicItem:
    """Propose a catalogue item (a manager approves it before anyone can redeem it)."""
    require(actor, "hcp:edit")
    code, name = (code or "").strip(), (name or "").strip()
    if not code or len(code) > 64:
        raise ValidationFailed("code is required (at most 64 characters)", "code")
    if not name or len(name) > 200:
        raise ValidationFailed("name is required (at most 200 characters)", "name")
    if kind not in ITEM_KINDS:
        raise ValidationFailed(f"kind must be one of {', '.join(ITEM_KINDS)}", "kind")
    if isinstance(points, bool) or not isinstance(points, int) or not 1 <= points <= 100_000:
        raise ValidationFailed("points must be 1 to 100000", "points")
    with transaction():
        if db.session.scalar(sa.select(AcademicItem.id).where(AcademicItem.code == code)):
            raise Conflict("an item with this code exists", "code")
        item = AcademicItem(
            code=code,
            name=name,
            kind=kind,
            points=points,
            status="draft",
            created_by_id=actor.user_id,
        )
        db.session.add(item)
        db.session.flush()
        audit.record(actor, "hcp.item_create", "hcp_academic_item", item.id, points=points)
    return item


def set_item_status(actor: Actor, item_id: int, status: str) -> AcademicItem:
    """Approve (never one's own proposal) or retire a catalogue item."""
    require(actor, "hcp:approve")
    if status not in ("approved", "retired"):
        raise ValidationFailed("status must be approved or retired", "status")
    with transaction():
        item = get_item(item_id)
        if status == "approved":
            if item.created_by_id is not None and item.created_by_id == actor.user_id:
                raise PermissionDenied("nobody approves an item they proposed")
            item.approved_by_id, item.approved_at = actor.user_id, utcnow()
        item.status = status
        audit.record(actor, f"hcp.item_{status}", "hcp_academic_item", item.id)
    return item


def catalogue(approved_only: bool = False) -> list[AcademicItem]:
    query = sa.select(AcademicItem).order_by(AcademicItem.status, AcademicItem.points)
    if approved_only:
        query = query.where(AcademicItem.status == "approved")
    return list(db.session.scalars(query))


def redeem(actor: Actor, profile_id: int, item_id: int, key: str) -> Redemption:
    """Spend a doctor's points on an approved academic item (once per idempotency key)."""
    require(actor, "hcp:edit")
    key = (key or "").strip()
    if not key or len(key) > 100:
        raise ValidationFailed("idempotency_key is required (at most 100)", "idempotency_key")
    row = master(profile_id)
    check_owner(actor, row)
    done = db.session.scalar(sa.select(Redemption).where(Redemption.idempotency_key == key))
    if done is not None:
        if (done.profile_id, done.item_id) != (row.profile_id, item_id):
            raise Conflict("idempotency_key was used for another redemption", "idempotency_key")
        return done
    item = get_item(item_id)
    if item.status != "approved":
        raise ValidationFailed("points are redeemable for approved academic items only", "item_id")
    if row.verification != "verified":
        raise PermissionDenied("only verified doctors redeem academic points")
    result = ledger_points.adjust(
        LEDGER_ACTOR,
        row.profile_id,
        -item.points,
        f"academic item {item.code}",
        f"hcp-redeem:{key}",
    )
    with transaction():
        redemption = Redemption(
            profile_id=row.profile_id,
            item_id=item.id,
            points=item.points,
            idempotency_key=key,
            points_entry_id=result.entry.id,
            created_by_id=actor.user_id,
        )
        db.session.add(redemption)
        db.session.flush()
        audit.record(
            actor,
            "hcp.redeemed",
            "profile",
            row.profile_id,
            item_id=item.id,
            points=item.points,
            entry=result.entry.id,
        )
    return redemption
