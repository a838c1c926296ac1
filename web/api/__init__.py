"""The management REST API under /api/v1, with its OpenAPI document at /api/openapi.json."""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api

from web.api import identity, jobs, me, profiles, sources, users
from web.extensions import csrf

API_BLUEPRINTS = (
    me.bp,
    users.bp,
    sources.bp,
    jobs.bp,
    profiles.bp,
    identity.merges_bp,
    identity.violations_bp,
)


def register_api(app: Flask) -> None:
    """Register the API blueprints: token auth on each, no CSRF (no cookies are accepted)."""
    # flask-smorest keeps one OpenAPI spec per Api object, so each app gets its own.
    api = Api(app)
    api.spec.components.security_scheme(
        "bearer", {"type": "http", "scheme": "bearer", "description": "from `cdp tokens create`"}
    )
    api.spec.options["security"] = [{"bearer": []}]
    for blueprint in API_BLUEPRINTS:
        csrf.exempt(blueprint)
        api.register_blueprint(blueprint)
