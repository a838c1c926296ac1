"""Language and time zone selection: Simplified Chinese by default, English on request."""

from __future__ import annotations

from datetime import datetime

from flask import Flask, current_app, session
from flask_babel import format_datetime
from flask_login import current_user


def select_locale() -> str:
    supported = current_app.config["LANGUAGES"]
    chosen = session.get("locale")
    if chosen in supported:
        return chosen
    user_locale = getattr(current_user, "locale", None)
    if user_locale in supported:
        return user_locale
    return current_app.config["BABEL_DEFAULT_LOCALE"]


def select_timezone() -> str:
    return current_app.config["TIMEZONE"]


def local_time(value: datetime | None, fmt: str = "yyyy-MM-dd HH:mm") -> str:
    """Format a UTC timestamp in the platform time zone (Asia/Shanghai by default)."""
    if value is None:
        return "—"
    return format_datetime(value, fmt)  # Flask-Babel converts to select_timezone()


def init_app(app: Flask) -> None:
    app.jinja_env.filters["local_time"] = local_time
    app.jinja_env.globals["current_locale"] = select_locale
