"""The areas of the navigation frame: profiles, sources, audit, settings and those to come."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, abort, current_app, redirect, render_template, request, url_for
from flask_babel import lazy_gettext as _l

from cdp.audit import verify_chain
from cdp.db import db
from cdp.exceptions import ValidationFailed
from cdp.models import AuditEntry, User
from cdp.models.profiles import PROFILE_KINDS
from cdp.profiles import identity_summary, list_profiles, search_profiles
from cdp.sources import (
    SOURCE_KINDS,
    create_source,
    endpoint_urls,
    get_source,
    list_sources,
    list_violations,
    rotate_write_key,
    source_stats,
)
from web.session_auth import current_actor, requires
from web.ui.forms import ActionForm, SearchForm, SourceForm

bp = Blueprint("areas", __name__)

# Areas whose capability lands with a later issue; the frame links them already.
UPCOMING = {
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


PAGE_SIZE = 50


@bp.route("/profiles", methods=["GET", "POST"])
@requires("profiles:view")
def profiles():
    """List profiles by kind (keyset-paged on id), or search them (POST, keeps PII out of URLs).

    Lists show no personal data: id, kind, city, identifier types and last activity.
    """
    form = SearchForm()
    kind = request.values.get("kind") if request.values.get("kind") in PROFILE_KINDS else None
    query, next_after = "", None
    if request.method == "POST":
        if not form.validate_on_submit():
            abort(400)
        query = (form.q.data or "").strip()
        if not query:
            return redirect(url_for("areas.profiles", kind=kind))
        page = [p for p in search_profiles(query, limit=PAGE_SIZE) if not kind or p.kind == kind]
    else:
        after = request.args.get("after", 0, type=int)
        page = list_profiles(kind=kind, after_id=after, limit=PAGE_SIZE + 1)
        next_after = page[PAGE_SIZE - 1].id if len(page) > PAGE_SIZE else None
        page = page[:PAGE_SIZE]
    return render_template(
        "areas/profiles.html",
        profiles=page,
        idents=identity_summary([p.id for p in page]),
        kind=kind,
        query=query,
        next_after=next_after,
        form=form,
    )


def _source_kinds() -> list[str]:
    return list(SOURCE_KINDS)


def _render_sources(form: SourceForm, status: int = 200):
    sources = list_sources()
    stats = source_stats([s.id for s in sources])
    return render_template("areas/sources.html", sources=sources, stats=stats, form=form), status


@bp.route("/sources")
@requires("sources:view")
def sources():
    """List sources with their kind, default profile kind, last event and counts."""
    return _render_sources(SourceForm(_source_kinds()))


@bp.route("/sources", methods=["POST"])
@requires("sources:edit")
def create_source_view():
    """Create a source and show its write key once (it is never stored in clear)."""
    form = SourceForm(_source_kinds())
    if not form.validate_on_submit():
        return _render_sources(form, 422)
    try:
        source, write_key = create_source(
            current_actor(),
            form.name.data,
            form.kind.data,
            default_profile_kind=form.default_profile_kind.data,
        )
    except ValidationFailed as exc:
        field = getattr(form, exc.field or "", None) or form.name
        field.errors = [*field.errors, exc.message]
        return _render_sources(form, 422)
    return _render_source(source, write_key=write_key, created=True)


def _render_source(source, write_key=None, created=False):
    return render_template(
        "areas/source_detail.html",
        source=source,
        stats=source_stats([source.id])[source.id],
        urls=endpoint_urls(source, current_app.config["PUBLIC_URL"]),
        violations=list_violations(source.id, limit=PAGE_SIZE),
        write_key=write_key,
        created=created,
        form=ActionForm(),
    )


@bp.route("/sources/<source_id>")
@requires("sources:view")
def source_detail(source_id: str):
    """A source: its endpoints, counts and most recent violations (no payloads)."""
    return _render_source(get_source(source_id))


@bp.route("/sources/<source_id>/rotate-key", methods=["POST"])
@requires("sources:edit")
def rotate_key(source_id: str):
    """Replace the write key; the new one is shown once, the old one stops working."""
    if not ActionForm().validate_on_submit():
        abort(400)
    source, write_key = rotate_write_key(current_actor(), source_id)
    return _render_source(source, write_key=write_key)


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
