"""/api/v1/segments: CRUD, preview, members, CSV export, size history, overlap and refresh.

Definitions follow the JSON Schema at /api/v1/segments/schema (docs/segments.md). A
definition that does not validate is answered 422 with ``errors``: JSON Pointer of each
problem in the request body -> messages.
"""

from __future__ import annotations

import csv
import io

from flask import Response, jsonify, stream_with_context
from flask.views import MethodView
from flask_smorest import abort
from marshmallow import Schema, fields, validate

from segments import definition as definitions
from segments import membership, service, tasks
from web.api.auth import api_blueprint, api_requires
from web.api.schemas import CursorPageArgsSchema, PageSchema, id_cursor
from web.session_auth import current_actor

bp = api_blueprint("segments", __name__, "Segments: rules over profiles and events")

DEFINITION_DOC = {"description": "see /api/v1/segments/schema and docs/segments.md"}


class SegmentSchema(Schema):
    id = fields.Integer(dump_only=True)
    name = fields.String(required=True, validate=validate.Length(min=1, max=120))
    description = fields.String(load_default="", validate=validate.Length(max=2000))
    definition = fields.Dict(required=True, metadata=DEFINITION_DOC)
    realtime = fields.Boolean(
        load_default=True, metadata={"description": "re-check after each ingested batch"}
    )
    refresh_minutes = fields.Integer(
        load_default=None,
        allow_none=True,
        validate=validate.Range(min=5, max=10080),
        metadata={"description": "scheduled refresh interval; null: 60 if time-based, else 1440"},
    )
    version = fields.Integer(dump_only=True)
    status = fields.String(dump_only=True)
    health_data = fields.Boolean(
        dump_only=True, metadata={"description": "counts only profiles with health-data consent"}
    )
    time_based = fields.Boolean(dump_only=True)
    depends_on = fields.List(fields.String(), dump_only=True)
    references = fields.List(fields.Integer(), dump_only=True)
    size = fields.Integer(dump_only=True)
    refreshed_at = fields.DateTime(dump_only=True, allow_none=True)
    last_refresh = fields.Dict(dump_only=True)
    created_at = fields.DateTime(dump_only=True)
    updated_at = fields.DateTime(dump_only=True)


class SegmentUpdateSchema(Schema):
    """Only the fields sent are changed."""

    name = fields.String(validate=validate.Length(min=1, max=120))
    description = fields.String(validate=validate.Length(max=2000))
    definition = fields.Dict(metadata=DEFINITION_DOC)
    realtime = fields.Boolean()
    refresh_minutes = fields.Integer(allow_none=True, validate=validate.Range(min=5, max=10080))


class SegmentPreviewRequestSchema(Schema):
    definition = fields.Dict(required=True, metadata=DEFINITION_DOC)


class SegmentMemberSchema(Schema):
    profile_id = fields.Integer()
    kind = fields.String()
    city = fields.String(allow_none=True)
    city_tier = fields.String(allow_none=True)
    preferred_channel = fields.String(allow_none=True)
    first_seen_at = fields.DateTime(allow_none=True)
    last_seen_at = fields.DateTime(allow_none=True)
    entered_at = fields.DateTime(allow_none=True)


class SegmentPreviewSchema(Schema):
    count = fields.Integer()
    sample = fields.List(
        fields.Nested(SegmentMemberSchema), metadata={"description": "up to 20, no personal data"}
    )
    health_data = fields.Boolean()
    notice = fields.String(allow_none=True)
    time_based = fields.Boolean()
    depends_on = fields.List(fields.String())
    ms = fields.Float()


class SegmentMemberPageSchema(PageSchema):
    items = fields.List(fields.Nested(SegmentMemberSchema))


class SegmentHistoryArgsSchema(Schema):
    days = fields.Integer(load_default=30, validate=validate.Range(min=1, max=366))
    at = fields.AwareDateTime(
        load_default=None, metadata={"description": "also answer the size at this instant"}
    )


class SegmentDaySchema(Schema):
    day = fields.String(metadata={"description": "local date (CDP_TIMEZONE)"})
    size = fields.Integer(metadata={"description": "members at the end of the day"})
    entered = fields.Integer()
    exited = fields.Integer()


class SegmentHistorySchema(Schema):
    items = fields.List(fields.Nested(SegmentDaySchema))
    at = fields.DateTime(allow_none=True)
    size_at = fields.Integer(allow_none=True)


class SegmentOverlapArgsSchema(Schema):
    a = fields.Integer(required=True)
    b = fields.Integer(required=True)


class SegmentOverlapSchema(Schema):
    a = fields.Integer()
    b = fields.Integer()
    both = fields.Integer()
    only_a = fields.Integer()
    only_b = fields.Integer()


class SegmentRefreshSchema(Schema):
    job_id = fields.Integer()
    status = fields.String()


def _invalid(exc: definitions.DefinitionInvalid, prefix: str = "/definition"):
    errors: dict[str, list[str]] = {}
    for problem in exc.problems:
        errors.setdefault(prefix + problem.path, []).append(problem.message)
    abort(422, message="the segment definition is not valid", messages=errors)


def _preview(definition: dict) -> dict:
    try:
        result = service.preview(current_actor(), definition)
    except definitions.DefinitionInvalid as exc:
        _invalid(exc)
    result["notice"] = service.HEALTH_NOTICE if result["health_data"] else None
    return result


@bp.route("")
class Segments(MethodView):
    @api_requires("segments:view")
    @bp.response(200, SegmentSchema(many=True))
    def get(self):
        """Active segments with their size and last refresh."""
        return service.list_segments()

    @api_requires("segments:edit")
    @bp.arguments(SegmentSchema)
    @bp.response(201, SegmentSchema)
    def post(self, data):
        """Create a segment; its members are computed by a refresh job started at once."""
        try:
            segment = service.create_segment(current_actor(), **data)
        except definitions.DefinitionInvalid as exc:
            _invalid(exc)
        tasks.start_refresh(current_actor(), [segment.id])
        return segment


@bp.route("/schema")
class DefinitionSchema(MethodView):
    @bp.doc(responses={"200": {"description": "JSON Schema (draft 2020-12)"}})
    def get(self):
        """The published JSON Schema of segment definitions."""
        return jsonify(definitions.build_schema())


@bp.route("/preview")
class Preview(MethodView):
    @api_requires("segments:view")
    @bp.arguments(SegmentPreviewRequestSchema)
    @bp.response(200, SegmentPreviewSchema)
    def post(self, data):
        """Count and a 20-profile sample (no personal data) for a definition, without saving."""
        return _preview(data["definition"])


@bp.route("/overlap")
class Overlap(MethodView):
    @api_requires("segments:view")
    @bp.arguments(SegmentOverlapArgsSchema, location="query")
    @bp.response(200, SegmentOverlapSchema)
    def get(self, args):
        """Current members of segment a, of b, and of both."""
        service.get_segment(args["a"])
        service.get_segment(args["b"])
        return membership.overlap(args["a"], args["b"])


@bp.route("/<int:segment_id>")
class SegmentDetail(MethodView):
    @api_requires("segments:view")
    @bp.response(200, SegmentSchema)
    def get(self, segment_id):
        """One segment (archived ones too)."""
        return service.get_segment(segment_id)

    @api_requires("segments:edit")
    @bp.arguments(SegmentUpdateSchema)
    @bp.response(200, SegmentSchema)
    def patch(self, data, segment_id):
        """Change a segment; a new definition bumps the version and starts a refresh."""
        try:
            segment = service.update_segment(current_actor(), segment_id, **data)
        except definitions.DefinitionInvalid as exc:
            _invalid(exc)
        if "definition" in data:
            tasks.start_refresh(current_actor(), [segment.id])
        return segment

    @api_requires("segments:edit")
    @bp.response(200, SegmentSchema)
    def delete(self, segment_id):
        """Archive: stop computing it and close open memberships; history is kept.

        409 while other segments refer to it.
        """
        return service.archive_segment(current_actor(), segment_id)


@bp.route("/<int:segment_id>/members")
class Members(MethodView):
    @api_requires("segments:view")
    @bp.arguments(CursorPageArgsSchema, location="query")
    @bp.response(200, SegmentMemberPageSchema)
    def get(self, args, segment_id):
        """Current members by profile id, cursor-paged; ids and non-personal fields only."""
        service.get_segment(segment_id)
        rows = membership.members(segment_id, after=args["cursor"] or 0, limit=args["limit"] + 1)
        more = len(rows) > args["limit"]
        rows = rows[: args["limit"]]
        return {"items": rows, "next_cursor": id_cursor(rows[-1]["profile_id"]) if more else None}


@bp.route("/<int:segment_id>/history")
class History(MethodView):
    @api_requires("segments:view")
    @bp.arguments(SegmentHistoryArgsSchema, location="query")
    @bp.response(200, SegmentHistorySchema)
    def get(self, args, segment_id):
        """Size at the end of each local day, with entries and exits; optionally at an instant."""
        service.get_segment(segment_id)
        at = args["at"]
        return {
            "items": membership.size_history(segment_id, args["days"]),
            "at": at,
            "size_at": membership.size_at(segment_id, at) if at else None,
        }


@bp.route("/<int:segment_id>/refresh")
class Refresh(MethodView):
    @api_requires("segments:edit")
    @bp.response(202, SegmentRefreshSchema)
    def post(self, segment_id):
        """Start a refresh job; follow it at /api/v1/jobs."""
        service.get_segment(segment_id, include_archived=False)
        job = tasks.start_refresh(current_actor(), [segment_id])
        return {"job_id": job.id, "status": job.status}


@bp.route("/<int:segment_id>/export.csv")
class Export(MethodView):
    @api_requires("segments:export")
    @bp.doc(responses={"200": {"description": "CSV", "content": {"text/csv": {}}}})
    def get(self, segment_id):
        """Current members as CSV: profile ids and non-personal fields. Every export is audited."""
        return csv_response(service.export_members(current_actor(), segment_id), segment_id)


def csv_response(rows, segment_id: int) -> Response:
    def generate():
        yield "\ufeff"  # so spreadsheet programs read the UTF-8 (Chinese city names)
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        for row in rows:
            writer.writerow(row)
            if buffer.tell() > 65536:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()

    response = Response(stream_with_context(generate()), mimetype="text/csv")
    response.headers["Content-Disposition"] = f"attachment; filename=segment-{segment_id}.csv"
    return response
