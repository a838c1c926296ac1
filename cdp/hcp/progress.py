"""Progress reports: how many doctors improved per knowledge dimension, per campaign and per rep.

A doctor's baseline in a dimension is their running score before the first change counted
(or that first quiz's score when they had none); they improved when the last score is at
least HCP_IMPROVED_BY higher. This answers "did the campaign move doctors' understanding?".
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta

import sqlalchemy as sa

from cdp.actors import Actor
from cdp.auth.permissions import require
from cdp.db import db, utcnow
from cdp.hcp.settings import dimensions, setting
from cdp.models import User
from cdp.models.hcp import HcpProfile, KnowledgeChange, Meeting, Participant


def improvements(changes: list[KnowledgeChange]) -> dict[str, dict]:
    """Per dimension: doctors assessed, doctors improved, average change.

    A doctor's baseline is their running score before the first change counted (or that
    first quiz's score when they had none); improved = the last score is at least
    HCP_IMPROVED_BY higher.
    """
    first: dict[tuple[int, str], float] = {}
    last: dict[tuple[int, str], float] = {}
    for c in sorted(changes, key=lambda c: c.id):
        key = (c.profile_id, c.dimension)
        if key not in first:
            first[key] = c.score_before if c.score_before is not None else c.score_after
        last[key] = c.score_after
    by = setting("HCP_IMPROVED_BY")
    out = {d: {"assessed": 0, "improved": 0, "average_change": 0.0} for d in dimensions()}
    totals: dict[str, float] = defaultdict(float)
    for (profile_id, dimension), start in first.items():
        entry = out.setdefault(dimension, {"assessed": 0, "improved": 0, "average_change": 0.0})
        delta = last[(profile_id, dimension)] - start
        entry["assessed"] += 1
        entry["improved"] += delta >= by
        totals[dimension] += delta
    for dimension, entry in out.items():
        if entry["assessed"]:
            entry["average_change"] = round(totals[dimension] / entry["assessed"], 1)
    return out


def campaign_report(actor: Actor, campaign: str) -> dict:
    """How many doctors improved in each dimension over a campaign's meetings."""
    require(actor, "hcp:view")
    meeting_ids = list(
        db.session.scalars(sa.select(Meeting.id).where(Meeting.campaign == campaign))
    )
    query = sa.select(KnowledgeChange).where(KnowledgeChange.meeting_id.in_(meeting_ids))
    if actor.role == "rep":
        mine = sa.select(HcpProfile.profile_id).where(HcpProfile.rep_id == actor.user_id)
        query = query.where(KnowledgeChange.profile_id.in_(mine))
    changes = list(db.session.scalars(query))
    return {
        "campaign": campaign,
        "meetings": len(meeting_ids),
        "doctors": len({c.profile_id for c in changes}),
        "dimensions": improvements(changes),
    }


def rep_report(actor: Actor, days: int = 90) -> list[dict]:
    """Per rep: their doctors, verified, covered (invited or attended in the window), and the
    knowledge improvements of their doctors. A rep sees their own line only."""
    require(actor, "hcp:view")
    since = utcnow() - timedelta(days=days)
    users = sa.select(User).where(User.role == "rep").order_by(User.email)
    if actor.role == "rep":
        users = users.where(User.id == actor.user_id)
    lines = []
    for user in db.session.scalars(users).all():
        doctors = list(
            db.session.scalars(sa.select(HcpProfile).where(HcpProfile.rep_id == user.id))
        )
        ids = [d.profile_id for d in doctors]
        covered = (
            db.session.scalar(
                sa.select(sa.func.count(sa.distinct(Participant.profile_id))).where(
                    Participant.profile_id.in_(ids),
                    sa.or_(Participant.invited_at >= since, Participant.first_joined_at >= since),
                )
            )
            if ids
            else 0
        )
        completed = (
            db.session.scalar(
                sa.select(sa.func.count(sa.distinct(Participant.profile_id))).where(
                    Participant.profile_id.in_(ids), Participant.completed_at >= since
                )
            )
            if ids
            else 0
        )
        changes = (
            list(
                db.session.scalars(
                    sa.select(KnowledgeChange).where(KnowledgeChange.profile_id.in_(ids))
                )
            )
            if ids
            else []
        )
        lines.append(
            {
                "rep_id": user.id,
                "rep": user.name or user.email,
                "doctors": len(ids),
                "verified": sum(d.verification == "verified" for d in doctors),
                "covered": covered,
                "completed": completed,
                "coverage": round(covered / len(ids), 3) if ids else 0.0,
                "dimensions": improvements(changes),
            }
        )
    return lines
