"""The dashboard: headline figures and recent jobs."""

from flask import Blueprint, render_template

from cdp.jobs import recent_jobs
from cdp.stats import overview
from web.session_auth import requires

bp = Blueprint("dashboard", __name__)


@bp.route("/")
@requires("dashboard:view")
def index():
    """Show profile and event counts by channel, and the latest background jobs."""
    return render_template("dashboard.html", stats=overview(), jobs=recent_jobs(limit=5))
