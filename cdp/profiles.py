"""Reading profiles: listing, one profile with its identifiers, and decrypting its PII."""

from __future__ import annotations

import sqlalchemy as sa

from cdp import audit
from cdp.actors import Actor
from cdp.auth.permissions import require
from cdp.db import db, transaction
from cdp.exceptions import NotFound
from cdp.models import Identity, Profile
from cdp.pii import PiiVault, vault

# Associated data binds the ciphertext to its use: a blob cut from another column won't decrypt.
PROFILE_PII_AAD = b"profile"


def encrypt_profile_pii(pii: dict, pii_vault: PiiVault | None = None) -> bytes:
    return (pii_vault or vault()).encrypt_json(pii, PROFILE_PII_AAD)


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
    require(actor, "profiles:view")
    profile = db.session.get(Profile, profile_id)
    if profile is None:
        raise NotFound("no such profile", "profile_id")
    data = decrypt_profile_pii(profile.pii_encrypted) if profile.pii_encrypted else {}
    with transaction():
        audit.record(actor, "profile.pii_view", "profile", profile_id, fields=sorted(data))
    return data
