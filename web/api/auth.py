"""Bearer-token authentication and permission checks for the REST API."""

from __future__ import annotations

import functools

from flask import g, request
from flask_smorest import Blueprint, abort

from cdp.auth.permissions import require
from cdp.auth.tokens import authenticate_token
from web.session_auth import current_actor

_QUERY_TOKEN_PARAMS = ("access_token", "token", "api_key", "apikey", "key")


def _unauthorized(message: str):
    abort(401, message=message, headers={"WWW-Authenticate": 'Bearer realm="cdp"'})


def authenticate_request() -> None:
    """Require a valid bearer token in the Authorization header (never in the query string)."""
    if any(name in request.args for name in _QUERY_TOKEN_PARAMS):
        _unauthorized("tokens are not accepted in the query string; use the Authorization header")
    scheme, _, raw = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not raw.strip():
        _unauthorized("missing bearer token in the Authorization header")
    token = authenticate_token(raw.strip())
    if token is None:
        _unauthorized("invalid or revoked token")
    g.api_token = token


def api_requires(permission: str):
    """Decorate an API view with a permission check (the table lives in cdp.auth.permissions)."""

    def decorate(view):
        @functools.wraps(view)
        def wrapped(*args, **kwargs):
            require(current_actor(), permission)
            return view(*args, **kwargs)

        return wrapped

    return decorate


def api_blueprint(name: str, import_name: str, description: str) -> Blueprint:
    """A REST API blueprint under /api/v1/<name> whose every request needs a bearer token."""
    blueprint = Blueprint(name, import_name, url_prefix=f"/api/v1/{name}", description=description)
    blueprint.before_request(authenticate_request)
    return blueprint
