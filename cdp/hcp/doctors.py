"""Doctors' master data: hospital, title, licence, verification, owning rep, computed tier.

The practising-certificate number is an ``hcp_license`` identity of the profile, so the
identity graph keeps it unique (one profile per number, one number per profile). Master data
is mirrored into the profile's traits (``hospital``, ``title``, ``city_tier``, ``hcp_tier``,
``hcp_verified`` …) so segment rules and journey branches can use it.
"""

from __future__ import annotations

import re
from datetime import timedelta

import sqlalchemy as sa

from cdp import audit
from cdp.actors import Actor
from cdp.auth.permissions import allowed, require
from cdp.db import db, transaction, utcnow
from cdp.exceptions import Conflict, NotFound, PermissionDenied, ValidationFailed
from cdp.hcp.settings import setting
from cdp.models import Identity, Profile, User
from cdp.models.hcp import (
    CITY_TIERS,
    SOCIETY_ROLES,
    TIERS,
    TITLES,
    HcpProfile,
    Meeting,
    Participant,
)
from cdp.profiles import live_profile_id

# 医师执业证书编码: 15 digits. A registry lookup (国家卫健委) would replace this format check.
LICENCE_PATTERN = re.compile(r"^\d{15}$")
MASTER_FIELDS = ("hospital", "department", "title", "city_tier", "society_role")
LIMITS = {"hospital": 200, "department": 100}


def doctor(profile_id: int) -> Profile:
    """The live ``hcp`` profile behind ``profile_id``; NotFound / ValidationFailed otherwise."""
    live = live_profile_id(profile_id) if isinstance(profile_id, int) else None
    profile = db.session.get(Profile, live) if live is not None else None
    if profile is None:
        raise NotFound("no such profile", "profile_id")
    if profile.kind != "hcp":
        raise ValidationFailed("this profile is not a doctor", "profile_id")
    return profile


def master(profile_id: int) -> HcpProfile:
    """The doctor's master data row (created, unverified and general, on first use)."""
    profile = doctor(profile_id)
    row = db.session.get(HcpProfile, profile.id)
    if row is None:
        row = HcpProfile(
            profile_id=profile.id,
            hospital="",
            department="",
            society_role="none",
            verification="unverified",
            tier="general",
            tier_override_reason="",
        )
        db.session.add(row)
        db.session.flush()
    return row


def check_owner(actor: Actor, row: HcpProfile) -> None:
    """Reps act on the doctors they own; everyone else with the permission on any doctor."""
    if actor.role == "rep" and row.rep_id != actor.user_id:
        raise PermissionDenied("reps act on their own doctors only")


def licence_of(profile_id: int) -> str | None:
    return db.session.scalar(
        sa.select(Identity.value_index).where(
            Identity.profile_id == profile_id, Identity.type == "hcp_license"
        )
    )


def _clean(fields: dict) -> dict:
    unknown = sorted(set(fields) - set(MASTER_FIELDS))
    if unknown:
        raise ValidationFailed(f"unknown field(s): {', '.join(unknown)}", unknown[0])
    clean = {}
    for name, value in fields.items():
        if name in LIMITS:
            value = (value or "").strip() if isinstance(value, str | type(None)) else value
            if not isinstance(value, str) or len(value) > LIMITS[name]:
                raise ValidationFailed(f"{name} must be text of at most {LIMITS[name]}", name)
        elif name == "title" and value not in (None, *TITLES):
            raise ValidationFailed(f"title must be one of {', '.join(TITLES)}", name)
        elif name == "city_tier" and value not in (None, *CITY_TIERS):
            raise ValidationFailed("city_tier must be 1 (一线) to 5 (四线及以下)", name)
        elif name == "society_role" and value not in SOCIETY_ROLES:
            raise ValidationFailed(f"society_role must be one of {', '.join(SOCIETY_ROLES)}", name)
        clean[name] = value
    return clean


def _mirror(row: HcpProfile) -> None:
    """Copy the segmentable master data into the profile's traits (latest wins, stamped now)."""
    profile = db.session.get(Profile, row.profile_id)
    now = utcnow().isoformat()
    values = {
        "hospital": row.hospital or None,
        "department": row.department or None,
        "title": row.title,
        "city_tier": row.city_tier,
        "hcp_tier": row.effective_tier,
        "hcp_verified": row.verification == "verified",
    }
    traits, times = dict(profile.traits or {}), dict(profile.trait_times or {})
    for key, value in values.items():
        if traits.get(key) != value:
            traits[key], times[key] = value, now
    profile.traits, profile.trait_times = traits, times


# --- tiers ------------------------------------------------------------------------------------


def activity(profile_id: int, now=None) -> dict:
    """Counts the tier rules may use: talks given and meetings completed in the last year."""
    since = (now or utcnow()) - timedelta(days=365)
    talks = db.session.scalar(
        sa.select(sa.func.count(Meeting.id)).where(
            Meeting.speaker_profile_id == profile_id,
            Meeting.status == "scheduled",
            Meeting.starts_at >= since,
        )
    )
    attended = db.session.scalar(
        sa.select(sa.func.count(Participant.id)).where(
            Participant.profile_id == profile_id, Participant.completed_at >= since
        )
    )
    return {"talks": talks or 0, "attended": attended or 0}


def _rule_holds(when: dict, facts: dict) -> bool:
    for key, wanted in when.items():
        if key.endswith("_gte"):
            if facts.get(key[: -len("_gte")], 0) < wanted:
                return False
        elif facts.get(key) not in wanted:
            return False
    return True


def compute_tier(row: HcpProfile) -> tuple[str, int | None]:
    """(tier, index of the rule that gave it) by the HCP_TIER_RULES, first match wins."""
    facts = {name: getattr(row, name) for name in ("title", "city_tier", "society_role")}
    facts.update(activity(row.profile_id))
    for index, rule in enumerate(setting("HCP_TIER_RULES")):
        if rule["tier"] in TIERS and _rule_holds(rule.get("when") or {}, facts):
            return rule["tier"], index
    return "general", None


def refresh(row: HcpProfile) -> bool:
    """Recompute the tier and mirror the traits; True when the computed tier changed."""
    tier, rule = compute_tier(row)
    changed = tier != row.tier
    row.tier, row.tier_rule, row.updated_at = tier, rule, utcnow()
    _mirror(row)
    return changed


def override_tier(actor: Actor, profile_id: int, tier: str | None, reason: str) -> HcpProfile:
    """Set (or clear, with None) a manager's tier over the rules; the reason is audited."""
    require(actor, "hcp:approve")
    if tier is not None and tier not in TIERS:
        raise ValidationFailed(f"tier must be one of {', '.join(TIERS)}", "tier")
    reason = (reason or "").strip()
    if not reason or len(reason) > 200:
        raise ValidationFailed("reason is required (at most 200 characters)", "reason")
    with transaction():
        row = master(profile_id)
        before = row.effective_tier
        row.tier_override, row.tier_override_reason = tier, reason
        row.tier_overridden_by_id, row.tier_overridden_at = actor.user_id, utcnow()
        refresh(row)
        audit.record(
            actor,
            "hcp.tier_override",
            "profile",
            row.profile_id,
            before=before,
            after=row.effective_tier,
            computed=row.tier,
            reason=reason,
        )
    return row


def recompute_tiers(actor: Actor) -> int:
    """Recompute every doctor's tier (after the rules changed); returns how many changed."""
    require(actor, "hcp:edit")
    changed = 0
    with transaction():
        for row in db.session.scalars(sa.select(HcpProfile).order_by(HcpProfile.profile_id)):
            changed += refresh(row)
        audit.record(actor, "hcp.tiers_recomputed", "hcp", None, changed=changed)
    return changed


# --- master data, licence, verification, rep --------------------------------------------------


def update_doctor(actor: Actor, profile_id: int, **fields) -> HcpProfile:
    """Change master data (hospital, department, title, city_tier, society_role)."""
    require(actor, "hcp:edit")
    clean = _clean(fields)
    with transaction():
        row = master(profile_id)
        check_owner(actor, row)
        for name, value in clean.items():
            setattr(row, name, value)
        refresh(row)
        audit.record(actor, "hcp.update", "profile", row.profile_id, fields=sorted(clean))
    return row


def set_licence(actor: Actor, profile_id: int, number: str) -> HcpProfile:
    """Record the practising-certificate number (an hcp_license identity, unique)."""
    require(actor, "hcp:edit")
    number = (number or "").strip() if isinstance(number, str) else ""
    if not LICENCE_PATTERN.match(number):
        raise ValidationFailed("a practising-certificate number has 15 digits", "licence")
    with transaction():
        row = master(profile_id)
        check_owner(actor, row)
        holder = db.session.scalar(
            sa.select(Identity.profile_id).where(
                Identity.type == "hcp_license",
                Identity.namespace == "",
                Identity.value_index == number,
            )
        )
        if holder is not None and live_profile_id(holder) != row.profile_id:
            raise Conflict("another doctor's profile holds this licence number", "licence")
        current = licence_of(row.profile_id)
        if current is not None and current != number:
            raise Conflict("this doctor already has another licence number", "licence")
        if current is None:
            db.session.add(
                Identity(
                    profile_id=row.profile_id, type="hcp_license", namespace="", value_index=number
                )
            )
        audit.record(actor, "hcp.licence_set", "profile", row.profile_id)
    return row


def verify(actor: Actor, profile_id: int, method: str) -> HcpProfile:
    """Mark a doctor verified: attested by their rep, or by a check of the licence number."""
    require(actor, "hcp:edit")
    if method not in ("rep", "licence_check"):
        raise ValidationFailed("method must be rep or licence_check", "method")
    with transaction():
        row = master(profile_id)
        check_owner(actor, row)
        if method == "rep" and row.rep_id is None:
            raise Conflict("assign the doctor's rep first: the rep attests", "method")
        if method == "licence_check" and not LICENCE_PATTERN.match(
            licence_of(row.profile_id) or ""
        ):
            raise Conflict("the doctor has no valid licence number to check", "method")
        if row.verification != "verified":
            row.verification, row.verification_method = "verified", method
            row.verified_by_id, row.verified_at = actor.user_id, utcnow()
            refresh(row)
            audit.record(actor, "hcp.verified", "profile", row.profile_id, method=method)
    return row


def revoke_verification(actor: Actor, profile_id: int, reason: str) -> HcpProfile:
    """Back to unverified (a licence found invalid); points stop until verified again."""
    require(actor, "hcp:approve")
    reason = (reason or "").strip()[:200]
    if not reason:
        raise ValidationFailed("reason is required", "reason")
    with transaction():
        row = master(profile_id)
        row.verification, row.verification_method = "unverified", None
        row.verified_by_id, row.verified_at = None, None
        refresh(row)
        audit.record(actor, "hcp.unverified", "profile", row.profile_id, reason=reason)
    return row


def assign_rep(actor: Actor, profile_id: int, rep_id: int | None) -> HcpProfile:
    """Give the doctor to a rep (a user with the rep role), or take them away (None)."""
    require(actor, "hcp:approve")
    if rep_id is not None:
        user = db.session.get(User, rep_id) if isinstance(rep_id, int) else None
        if user is None or not user.is_active or user.role != "rep":
            raise ValidationFailed("rep_id must be an active user with the rep role", "rep_id")
    with transaction():
        row = master(profile_id)
        before, row.rep_id, row.updated_at = row.rep_id, rep_id, utcnow()
        audit.record(
            actor, "hcp.rep_assigned", "profile", row.profile_id, before=before, after=rep_id
        )
    return row


# --- reading ----------------------------------------------------------------------------------


def visible_to(actor: Actor, query, column=HcpProfile.rep_id):
    """Restrict a query to what the actor may see: a rep sees their own doctors."""
    if actor.role == "rep":
        return query.where(column == actor.user_id)
    return query


def list_doctors(
    actor: Actor,
    rep_id=None,
    tier=None,
    verification=None,
    q=None,
    after_id: int = 0,
    limit: int = 50,
) -> list[tuple[Profile, HcpProfile | None]]:
    """Doctors (hcp profiles), with master data where there is any, in id order."""
    require(actor, "hcp:view")
    query = (
        sa.select(Profile, HcpProfile)
        .outerjoin(HcpProfile, HcpProfile.profile_id == Profile.id)
        .where(Profile.kind == "hcp", Profile.merged_into_id.is_(None), Profile.id > after_id)
        .order_by(Profile.id)
        .limit(max(1, min(limit, 500)))
    )
    query = visible_to(actor, query)
    if rep_id is not None:
        query = query.where(HcpProfile.rep_id == rep_id)
    if tier:
        query = query.where(sa.func.coalesce(HcpProfile.tier_override, HcpProfile.tier) == tier)
    if verification == "verified":
        query = query.where(HcpProfile.verification == "verified")
    elif verification == "unverified":
        query = query.where(sa.func.coalesce(HcpProfile.verification, "unverified") == "unverified")
    if q:
        like = f"%{q.strip()[:100]}%"
        query = query.where(
            sa.or_(HcpProfile.hospital.like(like), HcpProfile.department.like(like))
        )
    return [tuple(row) for row in db.session.execute(query)]


def get_doctor(actor: Actor, profile_id: int) -> HcpProfile:
    """A doctor's master data (a rep: only their own)."""
    require(actor, "hcp:view")
    row = master(profile_id)
    check_owner(actor, row)
    return row


def reps() -> list[User]:
    return list(db.session.scalars(sa.select(User).where(User.role == "rep").order_by(User.email)))


def can_approve(actor: Actor) -> bool:
    return allowed(actor.role, "hcp:approve")
