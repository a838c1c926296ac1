"""A source page's "Sync now": queue a pull connector's job; the page shows its newest run."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, url_for
from flask_babel import gettext as _

from cdp.exceptions import ValidationFailed
from cdp.models import Source
from cdp.sources import SOURCE_KINDS, get_kind, get_source
from web.session_auth import current_actor, requires
from web.ui.forms import ActionForm

bp = Blueprint("sources_sync", __name__)


@bp.app_template_global()
def source_pull(source: Source) -> dict | None:
    """What the source page shows of pulls (None: nothing is pulled for this source)."""
    kind = SOURCE_KINDS.get(source.kind)
    if kind is None:
        return None
    pull = {"can_pull": kind.can_pull(source), "job": kind.latest_pull(source)}
    return pull if pull["can_pull"] or pull["job"] is not None else None


@bp.route("/sources/<source_id>/sync", methods=["POST"])
@requires("sources:edit")
def sync_now(source_id: str):
    """Queue a pull now (WeChat followers, shop orders), besides the scheduled ones."""
    if not ActionForm().validate_on_submit():
        abort(400)
    source = get_source(source_id)
    try:
        job = get_kind(source.kind).start_pull(current_actor(), source)
    except ValidationFailed as exc:
        flash(_("This source cannot be synced: %(reason)s", reason=exc.message), "error")
    else:
        flash(_("Sync queued as job %(id)s.", id=job.id))
    return redirect(url_for("areas.source_detail", source_id=source.id, _anchor="sync"))
