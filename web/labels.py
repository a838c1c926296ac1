"""Translated display labels for codes shown in the UI (roles, channels, statuses, errors)."""

from __future__ import annotations

from flask import Flask
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from cdp.auth.permissions import allowed

ROLE_LABELS = {
    "admin": _l("Administrator"),
    "marketer": _l("Marketer"),
    "reviewer": _l("Medical/legal reviewer"),
    "analyst": _l("Data scientist"),
    "partner": _l("Partner pharmacy"),
    "rep": _l("Medical representative"),
    "manager": _l("Rep manager"),
}
CHANNEL_LABELS = {
    "wechat": _l("WeChat official account"),
    "miniprogram": _l("Mini-program"),
    "pos": _l("Pharmacy POS"),
    "ecommerce": _l("E-commerce"),
    "http": _l("HTTP tracking API"),
    "sms": _l("SMS gateway"),
    "pharmacy": _l("Partner pharmacy member sync"),
    "livestream": _l("Live-stream platform"),
    "internal": _l("CarePath (internal)"),
    "webhook": _l("Webhook"),
}
KIND_LABELS = {"patient": _l("Patient"), "hcp": _l("Doctor")}
IDENTIFIER_LABELS = {
    "hcp_license": _l("Practising certificate no."),
    "wechat_unionid": _l("WeChat UnionID"),
    "user_id": _l("User ID"),
    "phone": _l("Mobile phone"),
    "email": _l("E-mail address"),
    "pharmacy_member": _l("Pharmacy member no."),
    "ecommerce_buyer": _l("E-commerce buyer ID"),
    "miniprogram_openid": _l("Mini-program OpenID"),
    "wechat_openid": _l("Official account OpenID"),
    "device_id": _l("Device ID"),
    "anonymous_id": _l("Anonymous ID"),
}
TRAIT_LABELS = {
    "name": _l("Full name"),
    "phone": _l("Mobile phone"),
    "mobile": _l("Mobile phone"),
    "email": _l("E-mail address"),
    "address": _l("Address"),
    "city": _l("City"),
    "province": _l("Province"),
    "gender": _l("Gender"),
    "birth_date": _l("Date of birth"),
    "birthday": _l("Date of birth"),
    "age": _l("Age"),
    "tier": _l("Membership tier"),
    "hospital": _l("Hospital"),
    "department": _l("Department"),
    "title": _l("Title"),
    "traits": _l("Traits"),
}
EVENT_TYPE_LABELS = {
    "identify": _l("Identified"),
    "track": _l("Tracked action"),
    "page": _l("Page view"),
    "screen": _l("Screen view"),
    "group": _l("Joined a group"),
    "alias": _l("Identity linked"),
}
ACTOR_LABELS = {
    "anonymous": _l("Anonymous"),
    "system": _l("System"),
    "user": _l("User"),
    "token": _l("API token"),
}
OUTCOME_LABELS = {"ok": _l("Succeeded"), "denied": _l("Denied")}
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
    409: _l("This cannot be done in the current state."),
    422: _l("Some of the data sent was not valid."),
    429: _l("Too many attempts. Please wait a minute and try again."),
    500: _l("Something went wrong on our side. It has been logged."),
}


def _lookup(table: dict, code):
    return table.get(code, code)


def error_message(code: int, description: str | None) -> str:
    return ERROR_MESSAGES.get(code) or description or ""


def can(permission: str) -> bool:
    """Whether the logged-in user's role grants ``permission`` (to show or hide controls)."""
    return current_user.is_authenticated and allowed(current_user.role, permission)


def init_app(app: Flask) -> None:
    app.jinja_env.globals.update(
        role_label=lambda c: _lookup(ROLE_LABELS, c),
        channel_label=lambda c: _lookup(CHANNEL_LABELS, c),
        kind_label=lambda c: _lookup(KIND_LABELS, c),
        status_label=lambda c: _lookup(STATUS_LABELS, c),
        identifier_label=lambda c: _lookup(IDENTIFIER_LABELS, c),
        trait_label=lambda c: _lookup(TRAIT_LABELS, c),
        event_type_label=lambda c: _lookup(EVENT_TYPE_LABELS, c),
        actor_label=lambda c: _lookup(ACTOR_LABELS, c),
        outcome_label=lambda c: _lookup(OUTCOME_LABELS, c),
        error_message=error_message,
        can=can,
    )
