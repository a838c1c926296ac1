"""/api/v1/journeys: drafts, validation, publishing and the lifecycle, versions, stats, test mode,
dry runs; /api/v1/deliveries: the outbox (what was sent, skipped or deferred, and why).

Definitions follow the JSON Schema at /api/v1/journeys/schema (docs/journeys.md). A definition
that cannot be published is answered 422 with ``problems``: every {path, code, message}.
"""

from __future__ import annotations

from flask import jsonify
from flask.views import MethodView
from marshmallow import INCLUDE, Schema, fields, validate

from journeys import dry_run, service, stats
from journeys.definition import schema as journey_schema
from journeys.models import DELIVERY_STATUSES, JOURNEY_STATUSES
from journeys.validation import InvalidDefinition
from journeys.validation import validate as validate_definition
from web.api.auth import api_blueprint, api_requires
from web.api.schemas import CursorPageArgsSchema, ErrorSchema, PageSchema, id_cursor
from web.session_auth import current_actor

bp = api_blueprint("journeys", __name__, "Journeys: definitions, lifecycle, versions, stats")
deliveries_bp = api_blueprint("deliveries", __name__, "The delivery outbox of journeys")

DEFINITION_DOC = {"description": "see /api/v1/journeys/schema and docs/journeys.md"}


class JourneyProblemSchema(Schema):
    path = fields.String(metadata={"description": "JSON Pointer into the definition"})
    code = fields.String(metadata={"description": "stable code (docs/journeys.md)"})
    message = fields.String()


class JourneyInvalidDefinitionErrorSchema(ErrorSchema):
    problems = fields.List(fields.Nested(JourneyProblemSchema))


class JourneySchema(Schema):
    id = fields.Integer(dump_only=True)
    name = fields.String(required=True, validate=validate.Length(min=1, max=120))
    description = fields.String(load_default="", validate=validate.Length(max=2000))
    definition = fields.Dict(
        required=True, attribute="draft", data_key="definition", metadata=DEFINITION_DOC
    )
    status = fields.String(dump_only=True)
    live_version = fields.Integer(
        dump_only=True, allow_none=True, metadata={"description": "the version new entrants get"}
    )
    test_mode = fields.Boolean(dump_only=True)
    test_profile_ids = fields.List(fields.Integer(), dump_only=True)
    created_by_id = fields.Integer(dump_only=True, allow_none=True)
    created_at = fields.DateTime(dump_only=True)
    updated_at = fields.DateTime(dump_only=True)


class JourneyUpdateSchema(Schema):
    """Only the fields sent are changed; the published version never is."""

    name = fields.String(validate=validate.Length(min=1, max=120))
    description = fields.String(validate=validate.Length(max=2000))
    definition = fields.Dict(metadata=DEFINITION_DOC)


class JourneyListArgsSchema(Schema):
    status = fields.String(load_default=None, validate=validate.OneOf(JOURNEY_STATUSES))


class JourneyDefinitionBodySchema(Schema):
    """The body is the definition itself."""

    class Meta:
        unknown = INCLUDE


class JourneyValidationResultSchema(Schema):
    valid = fields.Boolean()
    problems = fields.List(fields.Nested(JourneyProblemSchema))


class JourneyPublishSchema(Schema):
    migrate = fields.Dict(
        keys=fields.String(),
        values=fields.String(),
        load_default=None,
        metadata={
            "description": "move live instances of older versions onto this one: old step id "
            "-> new step id (ids the new version also has may be left out)"
        },
    )
    note = fields.String(load_default="", validate=validate.Length(max=2000))


class JourneyVersionSchema(Schema):
    id = fields.Integer()
    journey_id = fields.Integer()
    number = fields.Integer()
    definition = fields.Dict(metadata={"description": "as published, content versions pinned"})
    published_at = fields.DateTime()
    published_by_id = fields.Integer(allow_none=True)
    note = fields.String()


class JourneyStatsArgsSchema(Schema):
    version = fields.Integer(
        load_default=None,
        validate=validate.Range(min=1, max=2**31 - 1),
        metadata={"description": "one version's figures; default: all"},
    )


class JourneyStatsSchema(Schema):
    journey_id = fields.Integer()
    version = fields.Integer(allow_none=True)
    totals = fields.Dict(metadata={"description": "instances: entered, active, waiting, …"})
    exits = fields.Dict(metadata={"description": "exit reason -> instances"})
    steps = fields.Dict(metadata={"description": "step id -> entered, now, completed, sent, …"})
    goal = fields.Dict(metadata={"description": "treatment vs holdout conversion, lift, ci95"})


class JourneyTestModeSchema(Schema):
    enabled = fields.Boolean(required=True)
    profile_ids = fields.List(
        fields.Integer(validate=validate.Range(min=1, max=2**63 - 1)),
        load_default=list,
        validate=validate.Length(max=service.MAX_TEST_PROFILES),
    )


class JourneyDryRunArgsSchema(Schema):
    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))
    definition = fields.Dict(
        load_default=None, metadata={"description": "try this definition instead of the draft"}
    )


class JourneyDryRunSchema(Schema):
    count = fields.Integer(metadata={"description": "who would enter now"})
    sample = fields.List(fields.Integer(), metadata={"description": "profile ids"})
    excluded_control = fields.Integer(metadata={"description": "kept out: global control group"})
    basis = fields.String(metadata={"description": "trigger: segment members; audience: kind"})
    test_mode = fields.Boolean()


class DeliveryArgsSchema(CursorPageArgsSchema):
    profile_id = fields.Integer(validate=validate.Range(min=1, max=2**63 - 1))
    journey_id = fields.Integer(validate=validate.Range(min=1, max=2**31 - 1))
    status = fields.String(validate=validate.OneOf(DELIVERY_STATUSES))


class DeliverySchema(Schema):
    id = fields.Integer()
    key = fields.String(metadata={"description": "idempotency key: instance:step:visit"})
    journey_id = fields.Integer(allow_none=True)
    version_id = fields.Integer(allow_none=True)
    instance_id = fields.Integer(allow_none=True)
    step_id = fields.String()
    profile_id = fields.Integer()
    action = fields.String()
    channel = fields.String(allow_none=True)
    content_version_id = fields.Integer(allow_none=True)
    category = fields.String()
    status = fields.String()
    reason = fields.String(allow_none=True, metadata={"description": "why skipped or failed"})
    detail = fields.String()
    attempts = fields.Integer()
    next_attempt_at = fields.DateTime(allow_none=True)
    provider_id = fields.String(allow_none=True)
    test = fields.Boolean()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    sent_at = fields.DateTime(allow_none=True)
    delivered_at = fields.DateTime(allow_none=True)


class DeliveryPageSchema(PageSchema):
    items = fields.List(fields.Nested(DeliverySchema))


@bp.errorhandler(InvalidDefinition)
def invalid_definition(exc: InvalidDefinition):
    """422 with every problem (the app-wide handler would keep only the first)."""
    errors: dict[str, list[str]] = {}
    for found in exc.problems:
        errors.setdefault("definition" + found["path"], []).append(found["message"])
    body = {
        "code": 422,
        "status": "Unprocessable Entity",
        "message": exc.message,
        "errors": errors,
        "problems": exc.problems,
    }
    return jsonify(body), 422


@bp.route("")
class Journeys(MethodView):
    @api_requires("journeys:view")
    @bp.arguments(JourneyListArgsSchema, location="query")
    @bp.response(200, JourneySchema(many=True))
    def get(self, args):
        """Journeys, most recently changed first; filter by `status`."""
        return service.list_journeys(args["status"])

    @api_requires("journeys:edit")
    @bp.arguments(JourneySchema)
    @bp.response(201, JourneySchema)
    def post(self, data):
        """Create a draft (it may be incomplete; publishing validates it)."""
        return service.create_journey(
            current_actor(), data["name"], data["draft"], data["description"]
        )


@bp.route("/schema")
class DefinitionSchema(MethodView):
    @bp.doc(responses={"200": {"description": "JSON Schema (draft 2020-12)"}})
    def get(self):
        """The published JSON Schema of journey definitions."""
        return jsonify(journey_schema())


@bp.route("/validate")
class Validate(MethodView):
    @api_requires("journeys:view")
    @bp.arguments(JourneyDefinitionBodySchema, description=DEFINITION_DOC["description"])
    @bp.response(200, JourneyValidationResultSchema)
    def post(self, definition):
        """Every problem of a definition (the body) with its JSON Pointer; nothing is saved."""
        problems = validate_definition(definition)
        return {"valid": not problems, "problems": problems}


@bp.route("/<int:journey_id>")
class JourneyDetail(MethodView):
    @api_requires("journeys:view")
    @bp.response(200, JourneySchema)
    def get(self, journey_id):
        """A journey with its draft definition."""
        return service.get_journey(journey_id)

    @api_requires("journeys:edit")
    @bp.arguments(JourneyUpdateSchema)
    @bp.response(200, JourneySchema)
    def patch(self, data, journey_id):
        """Edit the draft; the live version changes only when the draft is published."""
        return service.update_journey(current_actor(), journey_id, **data)


@bp.route("/<int:journey_id>/publish")
class Publish(MethodView):
    @api_requires("journeys:publish")
    @bp.arguments(JourneyPublishSchema)
    @bp.response(201, JourneyVersionSchema)
    @bp.alt_response(422, schema=JourneyInvalidDefinitionErrorSchema, description="not publishable")
    def post(self, data, journey_id):
        """Validate the draft and publish it as a new immutable version (content pinned).

        People inside stay on their version unless `migrate` maps their steps to this one.
        """
        return service.publish(
            current_actor(), journey_id, migrate=data["migrate"], note=data["note"]
        )


def _lifecycle(action: str, doc: str) -> None:
    operation = getattr(service, action)

    class Action(MethodView):
        @api_requires("journeys:publish")
        @bp.response(200, JourneySchema)
        def post(self, journey_id):
            return operation(current_actor(), journey_id)

    Action.post.__doc__ = doc
    Action.__name__ = action.title()
    bp.route(f"/<int:journey_id>/{action}")(Action)


_lifecycle("pause", "Pause a published journey: no one enters; instances wait where they are.")
_lifecycle("resume", "Resume a paused journey.")
_lifecycle("archive", "Archive: live instances exit (archived), pending sends are skipped.")


@bp.route("/<int:journey_id>/versions")
class Versions(MethodView):
    @api_requires("journeys:view")
    @bp.response(200, JourneyVersionSchema(many=True))
    def get(self, journey_id):
        """Published versions, newest first."""
        return service.list_versions(journey_id)


@bp.route("/<int:journey_id>/versions/<int:number>")
class Version(MethodView):
    @api_requires("journeys:view")
    @bp.response(200, JourneyVersionSchema)
    def get(self, journey_id, number):
        return service.get_version(journey_id, number)


@bp.route("/<int:journey_id>/stats")
class Stats(MethodView):
    @api_requires("journeys:view")
    @bp.arguments(JourneyStatsArgsSchema, location="query")
    @bp.response(200, JourneyStatsSchema)
    def get(self, args, journey_id):
        """Entered, in step now, completed, exits by reason, sends by outcome, goal vs holdout."""
        return stats.journey_stats(journey_id, args["version"])


@bp.route("/<int:journey_id>/test-mode")
class TestMode(MethodView):
    @api_requires("journeys:edit")
    @bp.arguments(JourneyTestModeSchema)
    @bp.response(200, JourneySchema)
    def post(self, data, journey_id):
        """Run for these profiles only (at most 50); their sends go to the preview log."""
        return service.set_test_mode(current_actor(), journey_id, **data)


@bp.route("/<int:journey_id>/dry-run")
class DryRun(MethodView):
    @api_requires("journeys:edit")
    @bp.arguments(JourneyDryRunArgsSchema)
    @bp.response(200, JourneyDryRunSchema)
    @bp.alt_response(422, schema=JourneyInvalidDefinitionErrorSchema, description="not readable")
    def post(self, data, journey_id):
        """Who would enter now: a count and sample profile ids; nothing is started."""
        return dry_run.dry_run(journey_id, data["limit"], definition=data["definition"])


@deliveries_bp.route("")
class Deliveries(MethodView):
    @api_requires("profiles:view")
    @deliveries_bp.arguments(DeliveryArgsSchema, location="query")
    @deliveries_bp.response(200, DeliveryPageSchema)
    def get(self, args):
        """The outbox, newest first: each send, coupon, points award or webhook, its status
        and why it was skipped, deferred or failed. Filter by profile, journey or status."""
        limit = args["limit"]
        rows = stats.deliveries(
            args.get("profile_id"),
            args.get("journey_id"),
            args.get("status"),
            limit + 1,
            args["cursor"],
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return {"items": rows, "next_cursor": id_cursor(rows[-1].id) if more else None}
