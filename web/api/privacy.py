"""/api/v1/privacy: PIPL data-subject export and erasure, request status, event retention."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Response
from flask.views import MethodView
from marshmallow import Schema, fields, validate

from cdp.db import db
from cdp.exceptions import NotFound, ValidationFailed
from cdp.models.privacy import PrivacyRequest
from cdp.privacy import erasure, export, retention
from web.api.auth import api_blueprint, api_requires
from web.api.schemas import PageArgsSchema
from web.session_auth import current_actor

bp = api_blueprint("privacy", __name__, "PIPL data-subject requests and event retention")


class ExportArgsSchema(Schema):
    profile_id = fields.Integer(required=True)
    format = fields.String(load_default="json", validate=validate.OneOf(["json", "zip"]))


class ErasureArgsSchema(Schema):
    profile_id = fields.Integer(required=True)
    reason = fields.String(load_default="", validate=validate.Length(max=300))
    confirm = fields.Boolean(
        required=True, metadata={"description": "must be true: erasure cannot be undone"}
    )


class RequestSchema(Schema):
    id = fields.Integer()
    kind = fields.String()
    profile_id = fields.Integer()
    status = fields.String()
    job_id = fields.Integer(allow_none=True)
    requested_by_id = fields.Integer(allow_none=True)
    reason = fields.String()
    result = fields.Dict(metadata={"description": "counts only"})
    created_at = fields.DateTime()
    finished_at = fields.DateTime(allow_none=True)


class RetentionRuleSchema(Schema):
    event_name = fields.String(dump_only=True)
    days = fields.Integer(required=True, validate=validate.Range(min=1, max=retention.MAX_DAYS))
    updated_at = fields.DateTime(dump_only=True)
    updated_by_id = fields.Integer(dump_only=True, allow_none=True)


@bp.route("/exports")
class Exports(MethodView):
    @api_requires("privacy:export")
    @bp.arguments(ExportArgsSchema)
    @bp.response(200, description="the bundle: JSON, or a zip of CSV files")
    def post(self, data):
        """Export everything held about a person (admin; audited).

        `format=zip` answers a zip with one CSV per section plus `export.json`.
        """
        bundle = export.export_person(current_actor(), data["profile_id"])
        name = f"profile-{bundle['profile_id']}-export"
        if data["format"] == "zip":
            body, mimetype, name = export.bundle_zip(bundle), "application/zip", name + ".zip"
        else:
            body, mimetype, name = export.bundle_json(bundle), "application/json", name + ".json"
        return Response(
            body,
            mimetype=mimetype,
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )


@bp.route("/erasures")
class Erasures(MethodView):
    @api_requires("privacy:erase")
    @bp.arguments(ErasureArgsSchema)
    @bp.response(202, RequestSchema)
    def post(self, data):
        """Queue the erasure of a person (admin): a background job; poll the request."""
        if not data["confirm"]:
            raise ValidationFailed("erasure cannot be undone; send confirm: true", "confirm")
        return erasure.request_erasure(current_actor(), data["profile_id"], data["reason"])


@bp.route("/requests")
class Requests(MethodView):
    @api_requires("privacy:view")
    @bp.arguments(PageArgsSchema, location="query")
    @bp.response(200, RequestSchema(many=True))
    def get(self, args):
        """Export and erasure requests, newest first."""
        return db.session.scalars(
            sa.select(PrivacyRequest).order_by(PrivacyRequest.id.desc()).limit(args["limit"])
        ).all()


@bp.route("/requests/<int:request_id>")
class RequestDetail(MethodView):
    @api_requires("privacy:view")
    @bp.response(200, RequestSchema)
    def get(self, request_id):
        request = db.session.get(PrivacyRequest, request_id)
        if request is None:
            raise NotFound("no such privacy request", "request_id")
        return request


@bp.route("/retention")
class RetentionRules(MethodView):
    @api_requires("privacy:view")
    @bp.response(200, RetentionRuleSchema(many=True))
    def get(self):
        """Retention rules: days to keep events of each name (`*`: every other name)."""
        return retention.list_rules()


@bp.route("/retention/<event_name>")
class RetentionRule(MethodView):
    @api_requires("privacy:retention")
    @bp.arguments(RetentionRuleSchema)
    @bp.response(200, RetentionRuleSchema)
    def put(self, data, event_name):
        """Set how many days events of this name are kept (`*` for the default)."""
        return retention.set_rule(current_actor(), event_name, data["days"])

    @api_requires("privacy:retention")
    @bp.response(204)
    def delete(self, event_name):
        retention.delete_rule(current_actor(), event_name)
