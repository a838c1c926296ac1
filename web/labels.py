"""Translated display labels for codes shown in the UI (roles, channels, statuses, errors)."""

from __future__ import annotations

from flask import Flask
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from web.ui.navigation import visible_items

ROLE_LABELS = {
    "admin": _l("Administrator"),
    "marketer": _l("Marketer"),
    "reviewer": _l("Medical/legal reviewer"),
    "analyst": _l("Data scientist"),
    "partner": _l("Partner pharmacy"),
}
CHANNEL_LABELS = {
    "wechat": _l("WeChat official account"),
    "miniprogram": _l("Mini-program"),
    "pos": _l("Pharmacy POS"),
    "ecommerce": _l("E-commerce"),
    "http": _l("HTTP tracking API"),
}
KIND_LABELS = {"patient": _l("Patient"), "hcp": _l("Doctor")}
STATUS_LABELS = {
    "queued": _l("Queued"),
    "running": _l("Running"),
    "succeeded": _l("Succeeded"),
    "failed": _l("Failed"),
}
ERROR_MESSAGES = {
    400: _l("The request was not valid."),
    401: _l("Please log in."),
    403: _l("You do not have permission to see this page."),
    404: _l("The page you asked for does not exist."),
    429: _l("Too many attempts. Please wait a minute and try again."),
    500: _l("Something went wrong on our side. It has been logged."),
}


def _lookup(table: dict, code):
    return table.get(code, code)


def error_message(code: int, description: str | None) -> str:
    return ERROR_MESSAGES.get(code) or description or ""


def _context() -> dict:
    role = current_user.role if current_user.is_authenticated else None
    return {"nav_items": visible_items(role)}


def init_app(app: Flask) -> None:
    app.context_processor(_context)
    app.jinja_env.globals.update(
        role_label=lambda c: _lookup(ROLE_LABELS, c),
        channel_label=lambda c: _lookup(CHANNEL_LABELS, c),
        kind_label=lambda c: _lookup(KIND_LABELS, c),
        status_label=lambda c: _lookup(STATUS_LABELS, c),
        error_message=error_message,
    )
