"""Reading profiles: lookup by identifier, search, identifiers, events, and audited PII views."""

from __future__ import annotations

import sqlalchemy as sa

from cdp import audit
from cdp.actors import Actor
from cdp.auth.permissions import require
from cdp.db import db, transaction
from cdp.exceptions import NotFound, ValidationFailed
from cdp.identity.types import make_identifier
from cdp.models import Event, Identity, Profile
from cdp.pii import PiiVault, vault

# Associated data binds the ciphertext to its use: a blob cut from another column won't decrypt.
PROFILE_PII_AAD = b"profile"


def encrypt_profile_pii(pii: dict, pii_vault: PiiVault | None = None) -> bytes:
    return (pii_vault or vault()).encrypt_json(pii, PROFILE_PII_AAD)


def name_index(pii: dict, pii_vault: PiiVault | None = None) -> str | None:
    """Blind index of a profile's full name (whitespace removed), for exact-name search."""
    name = "".join(str(pii.get("name") or "").split())
    return (pii_vault or vault()).blind_index("name", name) if name else None


def decrypt_profile_pii(blob: bytes, pii_vault: PiiVault | None = None) -> dict:
    return (pii_vault or vault()).decrypt_json(blob, PROFILE_PII_AAD)


def list_profiles(kind: str | None = None, after_id: int = 0, limit: int = 50) -> list[Profile]:
    """A page of live (unmerged) profiles ordered by id (keyset pagination)."""
    query = sa.select(Profile).where(Profile.merged_into_id.is_(None), Profile.id > after_id)
    if kind:
        query = query.where(Profile.kind == kind)
    return list(db.session.scalars(query.order_by(Profile.id).limit(limit)))


def identity_summary(profile_ids: list[int]) -> dict[int, list[str]]:
    """Identifier types per profile (no values), for lists."""
    rows = db.session.execute(
        sa.select(Identity.profile_id, Identity.type)
        .where(Identity.profile_id.in_(profile_ids))
        .distinct()
    )
    summary: dict[int, list[str]] = {pid: [] for pid in profile_ids}
    for pid, kind in rows:
        summary[pid].append(kind)
    return summary


def view_pii(actor: Actor, profile_id: int) -> dict:
    """Decrypt a profile's personal data for display; every view is audited."""
    require(actor, "profiles:pii")
    profile = db.session.get(Profile, profile_id)
    if profile is None:
        raise NotFound("no such profile", "profile_id")
    data = decrypt_profile_pii(profile.pii_encrypted) if profile.pii_encrypted else {}
    with transaction():
        audit.record(actor, "profile.pii_view", "profile", profile_id, fields=sorted(data))
    return data


def live_profile_id(profile_id: int) -> int | None:
    """Follow merges from any profile id to the profile that holds its data now."""
    seen = set()
    while profile_id is not None and profile_id not in seen:
        seen.add(profile_id)
        merged_into = db.session.scalar(
            sa.select(Profile.merged_into_id).where(Profile.id == profile_id)
        )
        if merged_into is None:
            exists = db.session.scalar(sa.select(Profile.id).where(Profile.id == profile_id))
            return exists
        profile_id = merged_into
    return None


def get_live_profile(profile_id: int) -> Profile:
    live = live_profile_id(profile_id)
    if live is None:
        raise NotFound("no such profile", "profile_id")
    return db.session.get(Profile, live)


def find_by_identifier(type_: str, namespace: str, value: str) -> Profile | None:
    """The live profile holding an identifier (phone numbers are matched by blind index)."""
    try:
        ident = make_identifier(vault(), type_, value, namespace or None)
    except ValidationFailed as exc:
        raise ValidationFailed(exc.message, "identifier") from None
    profile_id = db.session.scalar(
        sa.select(Identity.profile_id).where(
            Identity.type == ident.type,
            Identity.namespace == ident.namespace,
            Identity.value_index == ident.index,
        )
    )
    return get_live_profile(profile_id) if profile_id else None


def search_profiles(query: str, limit: int = 20) -> list[Profile]:
    """Find profiles by id, phone, WeChat/mini-program openid or exact full name."""
    query = (query or "").strip()
    if not query:
        return []
    ids: list[int] = []
    if query.isdigit() and len(query) < 11:
        ids.append(int(query))
    try:
        phone = make_identifier(vault(), "phone", query)
        ids += db.session.scalars(
            sa.select(Identity.profile_id).where(
                Identity.type == "phone", Identity.value_index == phone.index
            )
        ).all()
    except ValidationFailed:
        pass
    ids += db.session.scalars(
        sa.select(Identity.profile_id)
        .where(
            Identity.type.in_(("wechat_openid", "miniprogram_openid", "wechat_unionid", "user_id")),
            Identity.value_index == query,
        )
        .limit(limit)
    ).all()
    index = name_index({"name": query})
    ids += db.session.scalars(
        sa.select(Profile.id).where(Profile.name_index == index).limit(limit)
    ).all()
    live = []
    for profile_id in dict.fromkeys(ids):
        found = live_profile_id(profile_id)
        if found is not None and found not in live:
            live.append(found)
    return [db.session.get(Profile, i) for i in live[:limit]]


def mask(type_: str, value: str) -> str:
    """Show enough of a personal identifier to recognise it, not to use it."""
    if type_ == "phone" and len(value) > 7:
        return value[:-8] + "****" + value[-4:]
    if type_ == "email" and "@" in value:
        name, _, domain = value.partition("@")
        return name[:1] + "***@" + domain
    return value


def identifiers_of(profile_id: int, reveal: bool = False) -> list[dict]:
    """A profile's identifiers; personal ones masked unless ``reveal`` (the caller audits that)."""
    rows = db.session.scalars(
        sa.select(Identity).where(Identity.profile_id == profile_id).order_by(Identity.id)
    ).all()
    result = []
    for row in rows:
        if row.value_encrypted is not None:
            value = vault().decrypt(row.value_encrypted, row.type.encode()).decode()
            shown = value if reveal else mask(row.type, value)
        else:
            shown = row.value_index
        result.append(
            {
                "type": row.type,
                "namespace": row.namespace,
                "value": shown,
                "source_id": row.source_id,
                "created_at": row.created_at,
            }
        )
    return result


def profile_events(
    profile_id: int, before: tuple | None = None, limit: int = 50
) -> tuple[list[Event], tuple | None]:
    """Events of a profile, newest first, keyset-paged on (timestamp, id)."""
    query = sa.select(Event).where(Event.profile_id == profile_id)
    if before is not None:
        ts, event_id = before
        query = query.where(
            sa.or_(Event.timestamp < ts, sa.and_(Event.timestamp == ts, Event.id < event_id))
        )
    rows = db.session.scalars(
        query.order_by(Event.timestamp.desc(), Event.id.desc()).limit(limit + 1)
    ).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, ((rows[-1].timestamp, rows[-1].id) if more else None)


def profile_family(profile_id: int) -> list[int]:
    """``profile_id`` and every profile merged into it, directly or through other merges."""
    family = [profile_id]
    frontier = [profile_id]
    while frontier:
        children = list(
            db.session.scalars(
                sa.select(Profile.id).where(
                    Profile.merged_into_id.in_(frontier), Profile.id.not_in(family)
                )
            )
        )
        family += children
        frontier = children
    return family
