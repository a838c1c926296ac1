"""/api/v1/jobs: status and progress of long-running jobs."""

from flask.views import MethodView

from cdp.jobs import recent_jobs
from web.api.auth import api_blueprint, api_requires
from web.api.schemas import JobRunSchema, PageArgsSchema

bp = api_blueprint("jobs", __name__, "Background jobs")


@bp.route("")
class Jobs(MethodView):
    @api_requires("jobs:view")
    @bp.arguments(PageArgsSchema, location="query")
    @bp.response(200, JobRunSchema(many=True))
    def get(self, args):
        """List the most recent job runs with their progress."""
        return recent_jobs(limit=args["limit"])
