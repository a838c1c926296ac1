"""The web layer: UI and REST API blueprints, error pages and security headers, wired in one place."""

from __future__ import annotations

import secrets
from pathlib import Path

from flask import Flask, g, request
from werkzeug.routing import IntegerConverter

from web import errors, i18n, labels, session_auth
from web.api import register_api
from web.extensions import babel, csrf, limiter, login_manager
from web.ui import BLUEPRINTS as UI_BLUEPRINTS
from web.ui import navigation


def _assign_request_id() -> None:
    g.request_id = request.headers.get("X-Request-Id", "")[:64] or secrets.token_hex(8)


def _security_headers(response):
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'",
    )
    if request.blueprint and not request.path.startswith("/static/"):
        response.headers.setdefault("Cache-Control", "no-store")
    if response.status_code < 400 or not response.headers.get("X-Request-Id"):
        response.headers["X-Request-Id"] = g.get("request_id", "")
    return response


HERE = Path(__file__).parent


class DatabaseId(IntegerConverter):
    """``<int:…>`` in every route: an id no integer column can hold is a 404, not a database
    overflow error (a 500) when it reaches SQL."""

    def __init__(self, map, *args, **kwargs):
        kwargs.setdefault("max", 2**31 - 1)
        super().__init__(map, *args, **kwargs)


def _serve_assets_from_here(app: Flask) -> None:
    # The app is named after the `cdp` package; templates and vendored assets live in `web/`.
    app.template_folder = str(HERE / "templates")
    app.static_folder = str(HERE / "static")
    if "static" not in app.view_functions:
        app.add_url_rule(
            f"{app.static_url_path}/<path:filename>",
            endpoint="static",
            view_func=app.send_static_file,
        )


def init_app(app: Flask) -> None:
    """Wire extensions, blueprints and handlers onto the app."""
    app.url_map.converters["int"] = DatabaseId  # before any route is added
    _serve_assets_from_here(app)
    app.config.setdefault("RATELIMIT_STORAGE_URI", app.config.get("REDIS_URL") or "cdp-memory://")
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", True)
    if app.config.get("PRODUCTION"):
        app.config.setdefault("STRICT_TRANSPORT_SECURITY", "max-age=31536000; includeSubDomains")
    csrf.init_app(app)
    limiter.init_app(app)
    # Flask-Babel looks for "translations" under the app root (the cdp package); ours live here.
    app.config.setdefault(
        "BABEL_TRANSLATION_DIRECTORIES", str(Path(__file__).parent / "translations")
    )
    babel.init_app(app, locale_selector=i18n.select_locale, timezone_selector=i18n.select_timezone)
    login_manager.init_app(app)
    session_auth.init_app(app)
    app.before_request(_assign_request_id)
    app.after_request(_security_headers)
    for blueprint in UI_BLUEPRINTS:
        app.register_blueprint(blueprint)
    register_api(app)
    errors.init_app(app)
    i18n.init_app(app)
    labels.init_app(app)
    navigation.init_app(app)
