"""Consent operations: record grants and withdrawals, read the current state, filter in SQL."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from cdp import audit
from cdp.actors import Actor
from cdp.auth.permissions import require
from cdp.db import db, transaction, utcnow
from cdp.exceptions import NotFound, ValidationFailed
from cdp.models.consent import CHANNELS, PURPOSES, STATUSES, ConsentRecord, ConsentState
from cdp.models.profiles import Profile
from cdp.profiles import live_profile_id


def _check(purpose: str, channel: str, status: str) -> None:
    if purpose not in PURPOSES:
        raise ValidationFailed(f"purpose must be one of {', '.join(PURPOSES)}", "purpose")
    if channel not in CHANNELS:
        raise ValidationFailed(f"channel must be one of {', '.join(CHANNELS)}", "channel")
    if status not in STATUSES:
        raise ValidationFailed(f"status must be one of {', '.join(STATUSES)}", "status")


def record_consent(
    actor: Actor,
    profile_id: int,
    purpose: str,
    channel: str,
    status: str,
    at: datetime | None = None,
    source_id: str | None = None,
    evidence: dict | None = None,
) -> ConsentRecord:
    """Append a consent record and update the current state if it is the latest.

    Runs in the caller's transaction (ingestion and API operations commit it). A
    record older than the current state (a late event) is kept as history only.
    """
    _check(purpose, channel, status)
    at = at or utcnow()
    session = db.session
    record = ConsentRecord(
        profile_id=profile_id,
        purpose=purpose,
        channel=channel,
        status=status,
        recorded_at=at,
        source_id=source_id,
        evidence=evidence or {},
        actor=f"{actor.kind}:{actor.user_id}" if actor.user_id else actor.kind,
    )
    session.add(record)
    session.flush()
    state = session.get(ConsentState, (profile_id, purpose, channel))
    if state is None:
        session.add(
            ConsentState(
                profile_id=profile_id,
                purpose=purpose,
                channel=channel,
                status=status,
                updated_at=at,
                record_id=record.id,
            )
        )
    elif at >= state.updated_at:
        state.status, state.updated_at, state.record_id = status, at, record.id
    audit.record(
        actor, "consent." + status, "profile", profile_id, purpose=purpose, channel=channel
    )
    return record


def current_consents(profile_id: int) -> dict[tuple[str, str], str]:
    rows = db.session.execute(
        sa.select(ConsentState.purpose, ConsentState.channel, ConsentState.status).where(
            ConsentState.profile_id == profile_id
        )
    )
    return {(purpose, channel): status for purpose, channel, status in rows}


def has_consent(profile_id: int, purpose: str, channel: str = "*") -> bool:
    """True only with an explicit, current grant for the purpose on that channel (or on '*')."""
    state = current_consents(profile_id)
    if state.get((purpose, channel)) == "withdrawn" or state.get((purpose, "*")) == "withdrawn":
        return False
    return "granted" in (state.get((purpose, channel)), state.get((purpose, "*")))


def granted_profiles(purpose: str, channel: str = "*") -> sa.Select:
    """SELECT of profile ids with a current grant (for segment and send filters in SQL)."""
    channels = (channel, "*") if channel != "*" else ("*",)
    withdrawn = sa.select(ConsentState.profile_id).where(
        ConsentState.purpose == purpose,
        ConsentState.channel.in_(channels),
        ConsentState.status == "withdrawn",
    )
    return sa.select(ConsentState.profile_id).where(
        ConsentState.purpose == purpose,
        ConsentState.channel.in_(channels),
        ConsentState.status == "granted",
        ConsentState.profile_id.not_in(withdrawn),
    )


def has_refused(profile_id: int, purpose: str, channel: str = "*") -> bool:
    """True when the person's current answer for the purpose (on the channel or '*') is a no."""
    state = current_consents(profile_id)
    return "withdrawn" in (state.get((purpose, channel)), state.get((purpose, "*")))


def refused_profiles(purpose: str, channel: str = "*") -> sa.Select:
    """SELECT of profile ids whose current answer is a withdrawal (e.g. PIPL Art. 24 refusals).

    Segments and propensity scoring exclude ``refused_profiles("automated_marketing")``.
    """
    channels = (channel, "*") if channel != "*" else ("*",)
    return sa.select(ConsentState.profile_id).where(
        ConsentState.purpose == purpose,
        ConsentState.channel.in_(channels),
        ConsentState.status == "withdrawn",
    )


def consent_history(profile_id: int, limit: int | None = None) -> list[ConsentRecord]:
    """Every grant and withdrawal of a profile, newest first."""
    query = (
        sa.select(ConsentRecord)
        .where(ConsentRecord.profile_id == profile_id)
        .order_by(ConsentRecord.recorded_at.desc(), ConsentRecord.id.desc())
    )
    return list(db.session.scalars(query.limit(limit) if limit else query))


def consent_states(profile_id: int) -> list[ConsentState]:
    return list(
        db.session.scalars(
            sa.select(ConsentState)
            .where(ConsentState.profile_id == profile_id)
            .order_by(ConsentState.purpose, ConsentState.channel)
        )
    )


def set_consent(
    actor: Actor,
    profile_id: int,
    purpose: str,
    channel: str,
    status: str,
    evidence: dict | None = None,
    at: datetime | None = None,
) -> ConsentRecord:
    """Record a grant or withdrawal made outside the event stream (API, UI, paper form)."""
    require(actor, "consents:edit")
    live = live_profile_id(profile_id)
    if live is None or db.session.get(Profile, live) is None:
        raise NotFound("no such profile", "profile_id")
    if at is not None and at > utcnow():
        raise ValidationFailed("a consent cannot be recorded in the future", "at")
    with transaction():
        return record_consent(actor, live, purpose, channel, status, at=at, evidence=evidence)
