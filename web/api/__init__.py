"""The management REST API under /api/v1, with its OpenAPI document at /api/openapi.json."""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api

from web.api import (
    audit,
    consents,
    content,
    hcp,
    identity,
    jobs,
    journeys,
    loyalty,
    me,
    models,
    partner,
    privacy,
    profiles,
    segments,
    sources,
    users,
)
from web.extensions import csrf

API_BLUEPRINTS = (
    partner.bp,
    loyalty.campaigns_bp,
    loyalty.loyalty_bp,
    me.bp,
    users.bp,
    sources.bp,
    jobs.bp,
    profiles.bp,
    identity.merges_bp,
    identity.violations_bp,
    segments.bp,
    journeys.bp,
    journeys.deliveries_bp,
    content.bp,
    consents.bp,
    privacy.bp,
    audit.bp,
    models.bp,
    hcp.bp,
)


def register_api(app: Flask) -> None:
    """Register the API blueprints: token auth on each, no CSRF (no cookies are accepted)."""
    # flask-smorest keeps one OpenAPI spec per Api object, so each app gets its own.
    api = Api(app)
    api.spec.components.security_scheme(
        "bearer", {"type": "http", "scheme": "bearer", "description": "from `cdp tokens create`"}
    )
    api.spec.options["security"] = [{"bearer": []}]
    api.spec.components.security_scheme(
        "partnerKey",
        {"type": "http", "scheme": "bearer", "description": "a partner key (`pk_…`)"},
    )
    for blueprint in API_BLUEPRINTS:
        csrf.exempt(blueprint)
        api.register_blueprint(blueprint)
    _partner_security(api)


def _partner_security(api: Api) -> None:
    """The partner API takes partner keys, not user tokens: say so on each of its operations."""
    for path, operations in api.spec._paths.items():  # apispec keeps no public accessor
        if path.startswith(partner.bp.url_prefix):
            for operation in operations.values():
                if isinstance(operation, dict):
                    operation["security"] = [{"partnerKey": []}]
