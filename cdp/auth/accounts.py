"""User accounts and login sessions: create, authenticate, start and end sessions."""

from __future__ import annotations

import hashlib
import secrets

import sqlalchemy as sa

from cdp import audit
from cdp.actors import Actor
from cdp.auth.passwords import check_strength, hash_password, verify_password
from cdp.auth.permissions import require
from cdp.db import db, transaction, utcnow
from cdp.exceptions import Conflict, NotFound, ValidationFailed
from cdp.models.users import ROLES, User, UserSession


def _normalise_email(email: str) -> str:
    email = (email or "").strip().lower()
    if "@" not in email or len(email) > 254 or email.startswith("@") or email.endswith("@"):
        raise ValidationFailed("not a valid e-mail address", "email")
    return email


def find_user(email: str) -> User | None:
    return db.session.scalar(sa.select(User).where(User.email == _normalise_email(email)))


def create_user(
    actor: Actor, email: str, role: str, password: str | None = None, name: str = ""
) -> tuple[User, str]:
    """Create a user; return it with its password (generated when none is given)."""
    require(actor, "users:edit")
    email = _normalise_email(email)
    if role not in ROLES:
        raise ValidationFailed(f"role must be one of {', '.join(ROLES)}", "role")
    password = password or secrets.token_urlsafe(12)
    check_strength(password)
    with transaction() as session:
        if session.scalar(sa.select(User.id).where(User.email == email)):
            raise Conflict(f"a user with e-mail {email} already exists", "email")
        user = User(email=email, role=role, name=name, password_hash=hash_password(password))
        session.add(user)
        session.flush()
        audit.record(actor, "user.create", "user", user.id, role=role)
    return user, password


def set_role(actor: Actor, user_id: int, role: str) -> User:
    require(actor, "users:edit")
    if role not in ROLES:
        raise ValidationFailed(f"role must be one of {', '.join(ROLES)}", "role")
    with transaction() as session:
        user = session.get(User, user_id)
        if user is None:
            raise NotFound("no such user", "user_id")
        old = user.role
        user.role = role
        # A role change ends the user's sessions so the new rights apply at once.
        session.execute(sa.delete(UserSession).where(UserSession.user_id == user.id))
        audit.record(actor, "user.role_change", "user", user.id, old_role=old, new_role=role)
    return user


def set_active(actor: Actor, user_id: int, active: bool) -> User:
    require(actor, "users:edit")
    with transaction() as session:
        user = session.get(User, user_id)
        if user is None:
            raise NotFound("no such user", "user_id")
        user.is_active = active
        if not active:
            session.execute(sa.delete(UserSession).where(UserSession.user_id == user.id))
        audit.record(actor, "user.activate" if active else "user.deactivate", "user", user.id)
    return user


def authenticate(actor: Actor, email: str, password: str) -> User | None:
    """Check a login; audit the attempt either way. Returns the user or None."""
    try:
        user = find_user(email)
    except ValidationFailed:
        user = None
    ok = verify_password(user.password_hash if user else None, password)
    ok = ok and user is not None and user.is_active
    with transaction():
        if ok:
            user.last_login_at = utcnow()
            audit.record(actor, "auth.login", "user", user.id)
        else:
            # The e-mail is personal data: the audit row names the user id when known, no more.
            audit.record(actor, "auth.login", "user", user.id if user else None, outcome="denied")
    return user if ok else None


def _session_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode("ascii", "replace")).hexdigest()


def start_session(user: User, ip: str | None, user_agent: str | None) -> str:
    """Open a server-side session; return the random id to put in the cookie."""
    raw = secrets.token_urlsafe(32)
    with transaction() as session:
        session.add(
            UserSession(
                id_hash=_session_hash(raw),
                user_id=user.id,
                ip=ip,
                user_agent=(user_agent or "")[:255],
            )
        )
    return raw


def load_session(raw: str | None) -> User | None:
    """The active user behind a session id, or None if it was ended or the user disabled."""
    if not raw:
        return None
    row = db.session.get(UserSession, _session_hash(raw))
    if row is None or not row.user.is_active:
        return None
    return row.user


def end_session(actor: Actor, raw: str | None) -> None:
    if not raw:
        return
    with transaction() as session:
        row = session.get(UserSession, _session_hash(raw))
        if row is not None:
            session.delete(row)
            audit.record(actor, "auth.logout", "user", row.user_id)
