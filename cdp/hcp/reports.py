"""Meeting and doctor reports: the funnel reconciled with raw events; knowledge, timeline, points.

The meeting funnel (invited → registered → attended → quiz → points) is counted twice: from
what the module recorded, and independently from the raw events on the profiles (invitation,
registration, join/leave, quiz and points events for the meeting). Both must agree; a
difference means events were not (yet) processed, or were refused (e.g. a quiz event for a
meeting without a quiz).
"""

from __future__ import annotations

from collections import defaultdict
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import current_app

from cdp.actors import Actor
from cdp.auth.permissions import require
from cdp.db import db, utcnow
from cdp.hcp import events
from cdp.hcp.doctors import check_owner, master, visible_to
from cdp.hcp.learning import watched
from cdp.hcp.meetings import get_meeting
from cdp.hcp.settings import dimensions, setting
from cdp.loyalty import ledger
from cdp.loyalty.common import setting as loyalty_setting
from cdp.models import Event, Profile
from cdp.models.hcp import (
    AcademicItem,
    Award,
    HcpProfile,
    KnowledgeScore,
    Meeting,
    Participant,
    QuizSubmission,
    Redemption,
)
from cdp.models.loyalty import PointAccount, PointEntry
from cdp.profiles import live_profile_id, profile_family

STAGES = ("invited", "registered", "joined", "attended", "quiz", "points")


# --- a meeting --------------------------------------------------------------------------------


def recorded_funnel(meeting: Meeting) -> dict[str, int]:
    p = Participant

    def count(*where) -> int:
        return db.session.scalar(
            sa.select(sa.func.count()).select_from(p).where(p.meeting_id == meeting.id, *where)
        )

    return {
        "requested": count(p.invitation == "requested"),
        "invited": count(p.invitation == "invited"),
        "registered": count(p.registered_at.is_not(None)),
        "joined": count(p.first_joined_at.is_not(None)),
        "attended": count(p.attended_seconds >= meeting.min_minutes * 60),
        "quiz": db.session.scalar(
            sa.select(sa.func.count()).where(QuizSubmission.meeting_id == meeting.id)
        ),
        "points": db.session.scalar(
            sa.select(sa.func.count()).where(
                Award.meeting_id == meeting.id, Award.status == "awarded"
            )
        ),
        "refused": db.session.scalar(
            sa.select(sa.func.count()).where(
                Award.meeting_id == meeting.id, Award.status == "refused"
            )
        ),
    }


def _meeting_id_text():
    """``properties.meeting_id`` as text, whether it was sent as a number or a string."""
    if db.session.get_bind().dialect.name == "sqlite":
        return sa.cast(sa.func.json_extract(Event.properties, "$.meeting_id"), sa.String)
    return Event.properties["meeting_id"].as_string()  # ->> gives the text of either


def _raw_events(meeting: Meeting, names: tuple[str, ...]):
    """(live doctor id, name, time) of the meeting's raw events with these names."""
    rows = db.session.execute(
        sa.select(Event.profile_id, Event.name, Event.timestamp).where(
            Event.name.in_(names),
            Event.profile_id.is_not(None),
            _meeting_id_text() == str(meeting.id),
        )
    ).all()
    live, kinds = {}, {}
    for profile_id, *_ in rows:
        if profile_id not in live:
            live[profile_id] = live_profile_id(profile_id)
    ids = {pid for pid in live.values() if pid is not None}
    if ids:
        kinds = dict(
            db.session.execute(sa.select(Profile.id, Profile.kind).where(Profile.id.in_(ids)))
            .tuples()
            .all()
        )
    return [(live[pid], name, at) for pid, name, at in rows if kinds.get(live[pid]) == "hcp"]


def raw_funnel(meeting: Meeting) -> dict[str, int]:
    """The same stages counted from raw events only."""
    names = (
        events.INVITED,
        events.REGISTERED,
        events.JOINED,
        events.LEFT,
        events.QUIZ_SUBMITTED,
        events.POINTS_AWARDED,
    )
    seen: dict[str, set[int]] = defaultdict(set)
    marks: dict[int, list] = defaultdict(list)
    for profile_id, name, at in _raw_events(meeting, names):
        seen[name].add(profile_id)
        if name in (events.JOINED, events.LEFT):
            marks[profile_id].append((at, name))
    now = utcnow()
    attended = sum(
        1 for ms in marks.values() if watched(meeting, ms, now)[0] >= meeting.min_minutes * 60
    )
    return {
        "invited": len(seen[events.INVITED]),
        "registered": len(seen[events.REGISTERED]),
        "joined": len(seen[events.JOINED]),
        "attended": attended,
        "quiz": len(seen[events.QUIZ_SUBMITTED]),
        "points": len(seen[events.POINTS_AWARDED]),
    }


def meeting_report(actor: Actor, meeting_id: int) -> dict:
    """The funnel, recorded and from raw events, with whether every stage reconciles."""
    require(actor, "hcp:view")
    meeting = get_meeting(meeting_id)
    recorded, raw = recorded_funnel(meeting), raw_funnel(meeting)
    stages = [
        {"stage": s, "recorded": recorded[s], "raw": raw[s], "reconciled": recorded[s] == raw[s]}
        for s in STAGES
    ]
    minutes = db.session.scalar(
        sa.select(sa.func.coalesce(sa.func.avg(Participant.attended_seconds), 0)).where(
            Participant.meeting_id == meeting.id, Participant.first_joined_at.is_not(None)
        )
    )
    return {
        "meeting_id": meeting.id,
        "stages": stages,
        "reconciled": all(s["reconciled"] for s in stages),
        "requested": recorded["requested"],
        "refused": recorded["refused"],
        "average_minutes": round(float(minutes) / 60, 1),
    }


def participants(meeting_id: int, actor: Actor) -> list[tuple[Participant, HcpProfile | None]]:
    query = (
        sa.select(Participant, HcpProfile)
        .outerjoin(HcpProfile, HcpProfile.profile_id == Participant.profile_id)
        .where(Participant.meeting_id == meeting_id)
        .order_by(Participant.id)
    )
    return [tuple(r) for r in db.session.execute(visible_to(actor, query))]


# --- a doctor ---------------------------------------------------------------------------------


def awarded_this_year(profile_id: int) -> int:
    """Points awarded this calendar year (CDP_TIMEZONE), counted as the ledger's HCP cap does."""
    zone = ZoneInfo(current_app.config.get("TIMEZONE") or "Asia/Shanghai")
    year_start = (
        utcnow().astimezone(zone).replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
    )
    accounts = sa.select(PointAccount.id).where(
        PointAccount.profile_id.in_(profile_family(profile_id))
    )
    line = sa.or_(
        PointEntry.kind == "earn",
        sa.and_(PointEntry.kind == "adjust", PointEntry.points > 0, PointEntry.rule != "merge"),
        sa.and_(PointEntry.kind == "reverse", PointEntry.points < 0),
    )
    return int(
        db.session.scalar(
            sa.select(sa.func.coalesce(sa.func.sum(PointEntry.points), 0)).where(
                PointEntry.account_id.in_(accounts), PointEntry.created_at >= year_start, line
            )
        )
    )


def knowledge(profile_id: int) -> list[dict]:
    """Running score per configured dimension (None: never assessed), weak ones flagged."""
    found = {
        row.dimension: row
        for row in db.session.scalars(
            sa.select(KnowledgeScore).where(KnowledgeScore.profile_id == profile_id)
        )
    }
    weak_below = setting("HCP_WEAK_BELOW")
    return [
        {
            "dimension": d,
            "score": found[d].score if d in found else None,
            "assessments": found[d].assessments if d in found else 0,
            "weak": d in found and found[d].score < weak_below,
        }
        for d in dimensions()
    ]


def timeline(profile_id: int, limit: int = 100) -> list[dict]:
    """What happened to the doctor here, newest first: invitations, attendance, quizzes,
    points and redemptions, each naming its meeting."""
    items = []
    mine = sa.union(
        sa.select(Participant.meeting_id).where(Participant.profile_id == profile_id),
        sa.select(Award.meeting_id).where(Award.profile_id == profile_id),
    ).subquery()
    topics = dict(
        db.session.execute(
            sa.select(Meeting.id, Meeting.topic).where(Meeting.id.in_(sa.select(mine)))
        )
        .tuples()
        .all()
    )
    for p in db.session.scalars(sa.select(Participant).where(Participant.profile_id == profile_id)):
        topic = topics.get(p.meeting_id, "")
        for kind, at in (
            ("requested", p.requested_at),
            ("invited", p.invited_at),
            ("registered", p.registered_at),
            ("joined", p.first_joined_at),
            ("completed", p.completed_at),
        ):
            if at is not None:
                detail = p.invited_via if kind == "invited" else ""
                if kind == "joined":
                    detail = f"{p.attended_seconds // 60}"
                items.append(
                    {
                        "at": at,
                        "kind": kind,
                        "meeting_id": p.meeting_id,
                        "topic": topic,
                        "detail": detail or "",
                    }
                )
    for s in db.session.scalars(
        sa.select(QuizSubmission).where(QuizSubmission.profile_id == profile_id)
    ):
        items.append(
            {
                "at": s.submitted_at,
                "kind": "quiz",
                "meeting_id": s.meeting_id,
                "topic": topics.get(s.meeting_id, ""),
                "detail": f"{s.correct}/{s.total}",
            }
        )
    for a in db.session.scalars(sa.select(Award).where(Award.profile_id == profile_id)):
        items.append(
            {
                "at": a.updated_at,
                "kind": f"points_{a.status}",
                "meeting_id": a.meeting_id,
                "topic": topics.get(a.meeting_id, ""),
                "detail": str(a.points) if a.status == "awarded" else a.reason.split(":")[0],
            }
        )
    redeemed = db.session.execute(
        sa.select(Redemption, AcademicItem.name)
        .join(AcademicItem)
        .where(Redemption.profile_id == profile_id)
    )
    for r, name in redeemed:
        items.append(
            {
                "at": r.created_at,
                "kind": "redeemed",
                "meeting_id": None,
                "topic": name,
                "detail": str(r.points),
            }
        )
    items.sort(key=lambda i: i["at"], reverse=True)
    return items[:limit]


def doctor_report(actor: Actor, profile_id: int) -> dict:
    """Master data, knowledge (radar), timeline, and points against the annual cap."""
    require(actor, "hcp:view")
    row = master(profile_id)
    check_owner(actor, row)
    return {
        "profile_id": row.profile_id,
        "knowledge": knowledge(row.profile_id),
        "timeline": timeline(row.profile_id),
        "points": {
            "balance": ledger.balance(row.profile_id),
            "awarded_this_year": awarded_this_year(row.profile_id),
            "annual_cap": loyalty_setting("LOYALTY_HCP_ANNUAL_CAP"),
        },
    }
