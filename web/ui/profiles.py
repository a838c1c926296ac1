"""The profile 360° page: traits, identifiers, cross-channel timeline and merge history.

Personal data is shown only after an explicit, audited POST (never in a URL or a list);
undoing a merge is an admin's POST with a confirmation step.
"""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _

from cdp.exceptions import Conflict, NotFound, ValidationFailed
from cdp.identity.merges import merge_history, unmerge
from cdp.profiles import get_live_profile, identifiers_of, profile_events, view_pii
from cdp.sources import list_sources
from web.api.schemas import decode_event_cursor, event_cursor
from web.session_auth import current_actor, requires
from web.ui.forms import ActionForm, UnmergeForm

bp = Blueprint("profile", __name__)

TIMELINE_PAGE = 30


def _before() -> tuple | None:
    cursor = request.args.get("before")
    if not cursor:
        return None
    try:
        return decode_event_cursor(cursor)
    except ValueError:
        raise ValidationFailed("invalid cursor", "before") from None


def _render(profile, pii: dict | None = None):
    events, more = profile_events(profile.id, before=_before(), limit=TIMELINE_PAGE)
    return render_template(
        "profiles/detail.html",
        profile=profile,
        pii=pii,
        identifiers=identifiers_of(profile.id, reveal=pii is not None),
        events=events,
        next_cursor=event_cursor(events[-1]) if more else None,
        sources={s.id: s for s in list_sources()},
        merges=merge_history(profile.id),
        form=ActionForm(),
    )


@bp.route("/profiles/<int:profile_id>")
@requires("profiles:view")
def detail(profile_id: int):
    """Show a profile; a merged id leads to the profile it was merged into."""
    profile = get_live_profile(profile_id)
    if profile.id != profile_id:
        flash(
            _("Profile #%(old)s was merged into profile #%(new)s.", old=profile_id, new=profile.id)
        )
        return redirect(url_for("profile.detail", profile_id=profile.id))
    return _render(profile)


@bp.route("/profiles/<int:profile_id>/reveal", methods=["POST"])
@requires("profiles:pii")
def reveal(profile_id: int):
    """Show the profile with its personal data; the view is written to the audit log."""
    if not ActionForm().validate_on_submit():
        abort(400)
    profile = get_live_profile(profile_id)
    return _render(profile, pii=view_pii(current_actor(), profile.id))


@bp.route("/profiles/<int:profile_id>/unmerge", methods=["POST"])
@requires("profiles:unmerge")
def undo_merge(profile_id: int):
    """Undo one merge of this profile, then come back to it."""
    form = UnmergeForm()
    if not form.validate_on_submit():
        abort(400)
    try:
        merge = unmerge(current_actor(), profile_id, form.merge_id.data)
    except NotFound:
        flash(_("There is no such merge to undo."), "error")
    except Conflict:
        flash(
            _("This merge cannot be undone: it was undone already, or later merges build on it."),
            "error",
        )
    else:
        flash(
            _(
                "Merge undone: profile #%(restored)s was restored.",
                restored=merge.merged_id,
            )
        )
    return redirect(url_for("profile.detail", profile_id=profile_id))
