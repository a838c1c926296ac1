"""Glue between Flask-Login and the server-side sessions and API tokens of ``cdp.auth``."""

from __future__ import annotations

import functools

from flask import Flask, g, request
from flask_login import UserMixin, current_user

from cdp.actors import Actor
from cdp.auth import accounts
from cdp.auth.permissions import require
from cdp.models.users import User
from web.extensions import login_manager


class SessionUser(UserMixin):
    """The logged-in user as Flask-Login sees it: ``get_id`` is the server-side session id."""

    def __init__(self, user: User, session_id: str):
        self.user = user
        self.session_id = session_id

    def get_id(self) -> str:
        return self.session_id

    @property
    def id(self) -> int:
        return self.user.id

    @property
    def role(self) -> str:
        return self.user.role

    @property
    def email(self) -> str:
        return self.user.email

    @property
    def locale(self) -> str | None:
        return self.user.locale

    @property
    def is_active(self) -> bool:
        return self.user.is_active


def _load_user(session_id: str) -> SessionUser | None:
    user = accounts.load_session(session_id)
    return SessionUser(user, session_id) if user else None


def client_ip() -> str | None:
    # Behind a proxy, configure ProxyFix so remote_addr is the client (docs/operations.md).
    return request.remote_addr


def current_actor() -> Actor:
    """The actor for the current request: API token, logged-in user, or anonymous."""
    token = g.get("api_token")
    if token is not None:
        return Actor(
            kind="token",
            user_id=token.user_id,
            role=token.user.role,
            ip=client_ip(),
            request_id=g.get("request_id"),
            token_id=token.id,
        )
    if current_user.is_authenticated:
        return Actor(
            kind="user",
            user_id=current_user.id,
            role=current_user.role,
            ip=client_ip(),
            request_id=g.get("request_id"),
        )
    return Actor(kind="anonymous", ip=client_ip(), request_id=g.get("request_id"))


def requires(permission: str):
    """Decorate a UI view: log in first, then check ``permission`` for the user's role."""

    def decorate(view):
        @functools.wraps(view)
        def wrapped(*args, **kwargs):
            if not current_user.is_authenticated:
                return login_manager.unauthorized()
            require(current_actor(), permission)
            return view(*args, **kwargs)

        return wrapped

    return decorate


def init_app(app: Flask) -> None:
    login_manager.user_loader(_load_user)
    login_manager.login_view = "auth.login"
    login_manager.login_message = None
    login_manager.session_protection = "basic"
