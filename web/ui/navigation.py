"""The navigation frame: each area, its endpoint and the permission that shows it."""

from __future__ import annotations

from dataclasses import dataclass

from flask_babel import lazy_gettext as _l
from flask_login import current_user

from cdp.auth.permissions import allowed


@dataclass(frozen=True)
class NavItem:
    endpoint: str
    label: object
    permission: str


NAV_ITEMS = (
    NavItem("dashboard.index", _l("Dashboard"), "dashboard:view"),
    NavItem("areas.profiles", _l("Profiles"), "profiles:view"),
    NavItem("segment.index", _l("Segments"), "segments:view"),
    NavItem("journey.index", _l("Journeys"), "journeys:view"),
    NavItem("content_ui.index", _l("Content"), "content:view"),
    NavItem("loyalty.index", _l("Loyalty"), "loyalty:view"),
    NavItem("hcp_ui.index", _l("Doctors"), "hcp:view"),
    NavItem("models_ui.index", _l("Models"), "models:view"),
    NavItem("areas.sources", _l("Sources"), "sources:view"),
    NavItem("areas.audit", _l("Audit"), "audit:view"),
    NavItem("privacy_ui.index", _l("Privacy"), "privacy:view"),
    NavItem("areas.settings", _l("Settings"), "settings:view"),
    NavItem("system.health", _l("Health"), "jobs:view"),
)


def visible_items(role: str | None) -> list[NavItem]:
    return [item for item in NAV_ITEMS if allowed(role, item.permission)]


def _navigation_context() -> dict:
    role = current_user.role if current_user.is_authenticated else None
    return {"nav_items": visible_items(role)}


def init_app(app) -> None:
    """Give every template the navigation items the current user may see."""
    app.context_processor(_navigation_context)
