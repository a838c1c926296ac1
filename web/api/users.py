"""/api/v1/users: list and create users (admin)."""

import sqlalchemy as sa
from flask.views import MethodView

from cdp.auth import accounts
from cdp.db import db
from cdp.models import User
from web.api.auth import api_blueprint, api_requires
from web.api.schemas import PageArgsSchema, UserCreatedSchema, UserCreateSchema, UserSchema
from web.session_auth import current_actor

bp = api_blueprint("users", __name__, "User accounts")


@bp.route("")
class Users(MethodView):
    @api_requires("users:edit")
    @bp.arguments(PageArgsSchema, location="query")
    @bp.response(200, UserSchema(many=True))
    def get(self, args):
        """List users."""
        return db.session.scalars(sa.select(User).order_by(User.id).limit(args["limit"])).all()

    @api_requires("users:edit")
    @bp.arguments(UserCreateSchema)
    @bp.response(201, UserCreatedSchema)
    def post(self, data):
        """Create a user; a password is generated and returned once when none is given."""
        given = data.get("password")
        user, password = accounts.create_user(
            current_actor(), data["email"], data["role"], given, data.get("name", "")
        )
        fields = ("id", "email", "name", "role", "is_active", "created_at")
        result = {name: getattr(user, name) for name in fields}
        if not given:
            result["password"] = password
        return result
