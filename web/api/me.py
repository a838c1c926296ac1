"""GET /api/v1/me: who the token acts as."""

from flask.views import MethodView

from cdp.db import db
from cdp.models import User
from web.api.auth import api_blueprint
from web.api.schemas import UserSchema
from web.session_auth import current_actor

bp = api_blueprint("me", __name__, "The calling user")


@bp.route("")
class Me(MethodView):
    @bp.response(200, UserSchema)
    def get(self):
        """Return the user the bearer token belongs to."""
        return db.session.get(User, current_actor().user_id)
