"""API bearer tokens: 256 random bits, shown once, stored as a lookup prefix and a SHA-256."""

from __future__ import annotations

import hashlib
import hmac
import secrets

import sqlalchemy as sa

from cdp import audit
from cdp.actors import Actor
from cdp.auth.permissions import require
from cdp.db import db, transaction, utcnow
from cdp.exceptions import NotFound
from cdp.models.tokens import ApiToken
from cdp.models.users import User

TOKEN_PREFIX = "cdp_"
_LOOKUP_CHARS = 12


def _digest(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def generate_secret(kind: str = TOKEN_PREFIX) -> tuple[str, str, str]:
    """Return (raw, lookup prefix, sha256) for a new 256-bit secret with a type prefix."""
    raw = kind + secrets.token_urlsafe(32)
    return raw, raw[len(kind) : len(kind) + _LOOKUP_CHARS], _digest(raw)


def match_secret(raw: str, kind: str) -> str | None:
    """The lookup prefix of a well-formed secret of this kind, else None."""
    if not raw or not raw.startswith(kind) or len(raw) < len(kind) + _LOOKUP_CHARS + 16:
        return None
    return raw[len(kind) : len(kind) + _LOOKUP_CHARS]


def secret_matches(raw: str, stored_hash: str) -> bool:
    return hmac.compare_digest(_digest(raw), stored_hash)


def create_token(actor: Actor, user: User, name: str = "") -> tuple[ApiToken, str]:
    """Issue a token for ``user``; the raw value is returned once and never stored."""
    if actor.user_id != user.id:
        require(actor, "users:edit")
    raw, prefix, digest = generate_secret()
    with transaction() as session:
        token = ApiToken(user_id=user.id, name=name, prefix=prefix, token_hash=digest)
        session.add(token)
        session.flush()
        audit.record(actor, "token.create", "api_token", token.id, user_id=user.id)
    return token, raw


def authenticate_token(raw: str) -> ApiToken | None:
    """The live token for ``raw`` whose user is active, or None."""
    prefix = match_secret(raw, TOKEN_PREFIX)
    if prefix is None:
        return None
    token = db.session.scalar(sa.select(ApiToken).where(ApiToken.prefix == prefix))
    if token is None or token.revoked_at is not None or not token.user.is_active:
        return None
    if not secret_matches(raw, token.token_hash):
        return None
    return token


def revoke_token(actor: Actor, token_id: int) -> ApiToken:
    with transaction() as session:
        token = session.get(ApiToken, token_id)
        if token is None:
            raise NotFound("no such token", "token_id")
        if actor.user_id != token.user_id:
            require(actor, "users:edit")
        token.revoked_at = token.revoked_at or utcnow()
        audit.record(actor, "token.revoke", "api_token", token.id)
    return token
