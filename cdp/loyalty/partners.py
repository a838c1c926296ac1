"""Partner pharmacies: creating them, their stores, and their API keys (hashed, rotatable).

A partner calls the partner API with its own key, never a user token. The key resolves
to a ``PartnerActor`` whose ``partner_id`` scopes every partner operation: the tenant
always comes from the authenticated key, never from a header or a parameter.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from cdp import audit
from cdp.actors import Actor
from cdp.auth.permissions import require
from cdp.auth.tokens import generate_secret, match_secret, secret_matches
from cdp.db import db, transaction, utcnow
from cdp.exceptions import Conflict, NotFound, ValidationFailed
from cdp.models.loyalty import Partner, PartnerKey, Store
from cdp.sources import create_source

PARTNER_KEY_PREFIX = "pk_"
SOURCE_KIND = "pharmacy"
_CODE = re.compile(r"^[a-z][a-z0-9_]{1,31}$")
_STORE_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
# Writing last_used_at on every call would add a write to every till request.
_TOUCH_EVERY = timedelta(minutes=5)
# Keys this process authenticated lately: a till request then needs no key lookup. Rotation
# and suspension clear the cache of the process that makes them at once; other processes
# stop accepting a revoked key within this many seconds.
KEY_CACHE_SECONDS = 10.0


@dataclass(frozen=True)
class PartnerActor(Actor):
    """A partner's API key acting: audited as ``partner:<id>``."""

    partner_id: int = 0

    @property
    def audit_id(self) -> str:
        return f"partner:{self.partner_id}"


def _clean_name(name: str, field: str = "name", limit: int = 120) -> str:
    name = (name or "").strip()
    if not name or len(name) > limit:
        raise ValidationFailed(f"{field} is required (at most {limit} characters)", field)
    return name


def _new_code() -> str:
    return "p" + secrets.token_hex(4)


def _issue_key(session, partner_id: int) -> str:
    raw, prefix, digest = generate_secret(PARTNER_KEY_PREFIX)
    session.add(PartnerKey(partner_id=partner_id, prefix=prefix, key_hash=digest))
    return raw


def create_partner(actor: Actor, name: str, code: str | None = None) -> tuple[Partner, str]:
    """Create a partner, its member-sync source and its first API key (returned once)."""
    require(actor, "loyalty:partners")
    name = _clean_name(name)
    code = (code or "").strip().lower() or _new_code()
    if not _CODE.match(code):
        raise ValidationFailed(
            "code: 2-32 lower-case letters, digits or _, starting with a letter", "code"
        )
    if db.session.scalar(sa.select(Partner.id).where(Partner.code == code)) is not None:
        raise Conflict(f"a partner with code '{code}' exists already", "code")
    source, _ = create_source(actor, f"{name} · 会员同步", SOURCE_KIND, {"partner_code": code})
    with transaction() as session:
        partner = Partner(code=code, name=name, source_id=source.id, created_by_id=actor.user_id)
        session.add(partner)
        session.flush()
        raw = _issue_key(session, partner.id)
        audit.record(actor, "partner.create", "partner", partner.id, code=code)
    return partner, raw


def rotate_key(actor: Actor, partner_id: int, grace_minutes: int = 0) -> tuple[Partner, str]:
    """Issue a new key (returned once); old keys stop working now or after ``grace_minutes``."""
    require(actor, "loyalty:partners")
    if not 0 <= grace_minutes <= 24 * 60:
        raise ValidationFailed("grace_minutes must be between 0 and 1440", "grace_minutes")
    with transaction() as session:
        partner = get_partner(partner_id)
        until = utcnow() + timedelta(minutes=grace_minutes)
        session.execute(
            sa.update(PartnerKey)
            .where(PartnerKey.partner_id == partner.id)
            .where(sa.or_(PartnerKey.revoked_at.is_(None), PartnerKey.revoked_at > until))
            .values(revoked_at=until)
        )
        raw = _issue_key(session, partner.id)
        audit.record(actor, "partner.rotate_key", "partner", partner.id, grace=grace_minutes)
    key_cache.clear()
    return partner, raw


def set_status(actor: Actor, partner_id: int, status: str) -> Partner:
    """Suspend a partner (its keys stop working) or make it active again."""
    require(actor, "loyalty:partners")
    if status not in ("active", "suspended"):
        raise ValidationFailed("status must be active or suspended", "status")
    with transaction():
        partner = get_partner(partner_id)
        partner.status = status
        audit.record(actor, "partner.status", "partner", partner.id, status=status)
    key_cache.clear()
    return partner


@dataclass(frozen=True)
class KeyGrant:
    """What an authenticated partner key grants: its id and the partner (the tenant)."""

    id: int
    partner_id: int
    revoked_at: datetime | None = None


class _KeyCache:
    """Grants by (database, SHA-256 of the presented key): the raw key is never kept."""

    def __init__(self):
        self.lock = threading.Lock()
        self.grants: dict[tuple[str, bytes], tuple[float, KeyGrant]] = {}

    @staticmethod
    def slot(raw: str) -> tuple[str, bytes]:
        return str(db.engine.url), hashlib.sha256(raw.encode()).digest()

    def get(self, slot) -> KeyGrant | None:
        found = self.grants.get(slot)
        if found is None or found[0] < time.monotonic():
            return None
        grant = found[1]
        if grant.revoked_at is not None and grant.revoked_at <= utcnow():
            return None  # a grace period ran out
        return grant

    def put(self, slot, grant: KeyGrant) -> None:
        now = time.monotonic()
        with self.lock:
            if len(self.grants) > 1000:
                self.grants = {k: v for k, v in self.grants.items() if v[0] >= now}
            self.grants[slot] = (now + KEY_CACHE_SECONDS, grant)

    def clear(self) -> None:
        with self.lock:
            self.grants.clear()


key_cache = _KeyCache()


def authenticate_key(raw: str) -> KeyGrant | None:
    """The grant of a live key of an active partner for ``raw``, or None.

    Looked up by its public prefix and compared in constant time; the answer is cached
    for ``KEY_CACHE_SECONDS`` per process.
    """
    prefix = match_secret(raw, PARTNER_KEY_PREFIX)
    if prefix is None:
        return None
    slot = key_cache.slot(raw)
    grant = key_cache.get(slot)
    if grant is not None:
        return grant
    row = db.session.execute(
        sa.select(PartnerKey, Partner.status)
        .join(Partner, Partner.id == PartnerKey.partner_id)
        .where(PartnerKey.prefix == prefix)
    ).first()
    if row is None or not secret_matches(raw, row[0].key_hash):
        return None
    key, status = row
    now = utcnow()
    if (key.revoked_at is not None and key.revoked_at <= now) or status != "active":
        return None
    if key.last_used_at is None or now - key.last_used_at > _TOUCH_EVERY:
        with transaction():
            key.last_used_at = now
    grant = KeyGrant(key.id, key.partner_id, key.revoked_at)
    key_cache.put(slot, grant)
    return grant


def get_partner(partner_id: int) -> Partner:
    partner = db.session.get(Partner, partner_id)
    if partner is None:
        raise NotFound("no such partner", "partner_id")
    return partner


def list_partners() -> list[Partner]:
    return list(db.session.scalars(sa.select(Partner).order_by(Partner.id)))


def partner_keys(partner_id: int) -> list[PartnerKey]:
    return list(
        db.session.scalars(
            sa.select(PartnerKey)
            .where(PartnerKey.partner_id == partner_id)
            .order_by(PartnerKey.id.desc())
        )
    )


# --- stores -----------------------------------------------------------------------------------


def add_store(actor: Actor, partner_id: int, code: str, name: str, city: str = "") -> Store:
    require(actor, "loyalty:partners")
    code = (code or "").strip()
    if not _STORE_CODE.match(code):
        raise ValidationFailed("code: 1-64 letters, digits, '.', '_' or '-'", "code")
    name = _clean_name(name, limit=200)
    with transaction() as session:
        partner = get_partner(partner_id)
        taken = session.scalar(
            sa.select(Store.id).where(Store.partner_id == partner.id, Store.code == code)
        )
        if taken is not None:
            raise Conflict(f"store '{code}' exists already", "code")
        store = Store(partner_id=partner.id, code=code, name=name, city=(city or "").strip()[:64])
        session.add(store)
        session.flush()
        audit.record(actor, "partner.store_add", "partner", partner.id, store_id=store.id)
    return store


def list_stores(partner_id: int) -> list[Store]:
    return list(
        db.session.scalars(
            sa.select(Store).where(Store.partner_id == partner_id).order_by(Store.code)
        )
    )


def store_codes(partner_id: int) -> set[str]:
    return set(db.session.scalars(sa.select(Store.code).where(Store.partner_id == partner_id)))


def require_store(partner_id: int, code: str | None, field: str = "store_code") -> str:
    """The store code if it is one of this partner's stores, else a 422 naming the field."""
    code = (code or "").strip()
    if not code:
        raise ValidationFailed(f"{field} is required", field)
    found = db.session.scalar(
        sa.select(Store.id).where(Store.partner_id == partner_id, Store.code == code)
    )
    if found is None:
        raise ValidationFailed(f"{field}: '{code[:64]}' is not one of your stores", field)
    return code
