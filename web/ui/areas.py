"""The areas of the navigation frame: profiles, sources, audit, settings and those to come."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, current_app, render_template, request
from flask_babel import lazy_gettext as _l

from cdp.audit import verify_chain
from cdp.db import db
from cdp.models import AuditEntry, User
from cdp.profiles import identity_summary, list_profiles
from cdp.sources import endpoint_urls, list_sources
from web.session_auth import requires

bp = Blueprint("areas", __name__)

# Areas whose capability lands with a later issue; the frame links them already.
UPCOMING = {
    "segments": (_l("Segments"), "segments:view"),
    "journeys": (_l("Journeys"), "journeys:view"),
    "content": (_l("Content"), "content:view"),
    "loyalty": (_l("Loyalty"), "loyalty:view"),
    "models": (_l("Models"), "models:view"),
}


def _upcoming_view(area: str):
    title, permission = UPCOMING[area]

    @requires(permission)
    def view():
        return render_template("areas/upcoming.html", title=title, area=area)

    view.__name__ = area
    view.__doc__ = f"Placeholder page of the {area} area."
    return view


for _area in UPCOMING:
    bp.add_url_rule(f"/{_area}", endpoint=_area, view_func=_upcoming_view(_area))


@bp.route("/profiles")
@requires("profiles:view")
def profiles():
    """List profiles (no personal data in lists), newest id last, keyset-paged."""
    kind = request.args.get("kind") if request.args.get("kind") in ("patient", "hcp") else None
    after = request.args.get("after", 0, type=int)
    page = list_profiles(kind=kind, after_id=after, limit=50)
    idents = identity_summary([p.id for p in page])
    next_after = page[-1].id if len(page) == 50 else None
    return render_template(
        "areas/profiles.html", profiles=page, idents=idents, kind=kind, next_after=next_after
    )


@bp.route("/sources")
@requires("sources:view")
def sources():
    """List sources with their endpoint URLs."""
    base = current_app.config["PUBLIC_URL"]
    rows = [(s, endpoint_urls(s, base)) for s in list_sources()]
    return render_template("areas/sources.html", rows=rows)


@bp.route("/audit")
@requires("audit:view")
def audit():
    """Show the latest audit entries and whether the hash chain is intact."""
    entries = db.session.scalars(
        sa.select(AuditEntry).order_by(AuditEntry.id.desc()).limit(100)
    ).all()
    return render_template("areas/audit.html", entries=entries, broken_at=verify_chain())


@bp.route("/settings")
@requires("settings:view")
def settings():
    """Show users and their roles."""
    users = db.session.scalars(sa.select(User).order_by(User.id)).all()
    return render_template("areas/settings.html", users=users)
