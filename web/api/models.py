"""/api/v1/models: propensity models, their versions and metrics, training, scoring, segments.

Training and scoring run as jobs on the ``models`` queue (202 with the job id; follow it
at /api/v1/jobs). Bad input (an event that never occurs, a horizon past the data end, a
bad filter) is answered 422 at once, before anything is queued.
"""

from __future__ import annotations

from flask.views import MethodView
from marshmallow import Schema, fields, validate

from segments.propensity import registry, service
from segments.propensity.models import ALGORITHMS
from segments.propensity.registry import model_payload, version_payload
from web.api.auth import api_blueprint, api_requires
from web.api.schemas import CursorPageArgsSchema, PageSchema, id_cursor
from web.session_auth import current_actor

bp = api_blueprint("models", __name__, "Propensity models: training, versions, scores")


class ModelMetricsSchema(Schema):
    roc_auc = fields.Float(allow_none=True)
    pr_auc = fields.Float(allow_none=True)
    lift_top_decile = fields.Float(allow_none=True)
    capture_top_decile = fields.Float(allow_none=True)
    base_rate = fields.Float(allow_none=True)


class ModelVersionSchema(Schema):
    version = fields.Integer()
    active = fields.Boolean()
    algorithm = fields.String()
    created_at = fields.String()
    trained_by = fields.String()
    cutoff = fields.String()
    model = fields.Nested(ModelMetricsSchema, allow_none=True)
    baseline = fields.Nested(
        ModelMetricsSchema, allow_none=True, metadata={"description": "recency-frequency heuristic"}
    )
    beats_baseline = fields.Boolean()
    health_data = fields.Boolean(
        metadata={"description": "scores count only with health-data consent"}
    )
    data_size = fields.Dict()
    scored_at = fields.String(allow_none=True)
    scored_count = fields.Integer()


class ModelVersionDetailSchema(ModelVersionSchema):
    params = fields.Dict()
    features = fields.List(fields.String())
    training_window = fields.Dict()
    metrics = fields.Dict(
        metadata={"description": "model, baseline, lift, calibration, importances, distribution"}
    )
    artifact = fields.Dict(metadata={"description": "path, sha256, bytes"})
    train_seconds = fields.Float()


class PropensityModelSchema(Schema):
    name = fields.String()
    target_event = fields.String()
    where = fields.List(fields.Dict())
    horizon_days = fields.Integer()
    profile_kind = fields.String()
    rescore_hours = fields.Integer(allow_none=True)
    versions = fields.Integer()
    active = fields.Nested(ModelVersionSchema, allow_none=True)


class PropensityModelDetailSchema(PropensityModelSchema):
    versions = fields.List(fields.Nested(ModelVersionSchema))


class ModelTrainSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=80))
    target_event = fields.String(required=True, validate=validate.Length(min=1, max=200))
    where = fields.List(
        fields.Dict(), load_default=None, metadata={"description": "filters as in docs/segments.md"}
    )
    horizon = fields.String(required=True, metadata={"example": "90d"})
    cutoff = fields.Date(required=True, metadata={"description": "local date; labels after it"})
    profile_kind = fields.String(
        load_default="patient", validate=validate.OneOf(["patient", "hcp"])
    )
    algorithm = fields.String(load_default="hgb", validate=validate.OneOf(ALGORITHMS))
    activate = fields.Boolean(
        load_default=None, allow_none=True, metadata={"description": "null: if first and good"}
    )


class ModelJobSchema(Schema):
    job_id = fields.Integer()
    status = fields.String()


class ModelTopSegmentSchema(Schema):
    top_percent = fields.Float(
        required=True, validate=validate.Range(min=0, max=100, min_inclusive=False)
    )
    name = fields.String(load_default=None, validate=validate.Length(min=1, max=120))


class ModelSegmentSchema(Schema):
    id = fields.Integer()
    name = fields.String()
    definition = fields.Dict()


class ModelScoreSchema(Schema):
    profile_id = fields.Integer()
    score = fields.Float()
    rank = fields.Integer()
    decile = fields.Integer()


class ModelScorePageSchema(PageSchema):
    items = fields.List(fields.Nested(ModelScoreSchema))


def _model(model) -> dict:
    found = registry.versions(model)
    active = next((v for v in found if v.active), None)
    return {
        **model_payload(model),
        "versions": len(found),
        "active": version_payload(active) if active else None,
    }


@bp.route("")
class Models(MethodView):
    @api_requires("models:view")
    @bp.response(200, PropensityModelSchema(many=True))
    def get(self):
        """Models with their active version's metrics."""
        return [_model(m) for m in registry.list_models()]


@bp.route("/train")
class Train(MethodView):
    @api_requires("models:edit")
    @bp.arguments(ModelTrainSchema)
    @bp.response(202, ModelJobSchema)
    def post(self, data):
        """Check the request, then queue training (a new version of the model)."""
        spec = service.make_spec(
            data["name"],
            data["target_event"],
            data["horizon"],
            data["cutoff"].isoformat(),
            data["where"],
            data["profile_kind"],
            data["algorithm"],
        )
        job = service.start_training(current_actor(), spec, data["activate"])
        return {"job_id": job.id, "status": job.status}


@bp.route("/<name>")
class ModelDetail(MethodView):
    @api_requires("models:view")
    @bp.response(200, PropensityModelDetailSchema)
    def get(self, name):
        """A model and all its versions, newest first."""
        model = registry.get_model(name)
        return {
            **model_payload(model),
            "versions": [version_payload(v) for v in registry.versions(model)],
        }


@bp.route("/<name>/versions")
class Versions(MethodView):
    @api_requires("models:view")
    @bp.response(200, ModelVersionSchema(many=True))
    def get(self, name):
        """The versions of a model, newest first."""
        return [version_payload(v) for v in registry.versions(registry.get_model(name))]


@bp.route("/<name>/versions/<int:number>")
class VersionDetail(MethodView):
    @api_requires("models:view")
    @bp.response(200, ModelVersionDetailSchema)
    def get(self, name, number):
        """One version in full: parameters, features, metrics, window, artifact checksum."""
        return version_payload(registry.get_version(registry.get_model(name), number), True)


@bp.route("/<name>/versions/<int:number>/activate")
class Activate(MethodView):
    @api_requires("models:edit")
    @bp.response(200, ModelVersionSchema)
    def post(self, name, number):
        """Make this version the active one (segments read its scores once it is scored)."""
        return version_payload(registry.activate(current_actor(), name, number))


@bp.route("/<name>/score")
class Score(MethodView):
    @api_requires("models:edit")
    @bp.response(202, ModelJobSchema)
    def post(self, name):
        """Queue scoring of every eligible profile with the active version."""
        job = service.start_scoring(current_actor(), name)
        return {"job_id": job.id, "status": job.status}


@bp.route("/<name>/scores")
class Scores(MethodView):
    @api_requires("models:view")
    @bp.arguments(CursorPageArgsSchema, location="query")
    @bp.response(200, ModelScorePageSchema)
    def get(self, args, name):
        """Stored scores of the active version, best first (cursor-paged by rank)."""
        version = registry.get_version(registry.get_model(name))
        after = args["cursor"] or 0
        rows = service.stored_scores(version, after, args["limit"] + 1)
        more = len(rows) > args["limit"]
        rows = rows[: args["limit"]]
        return {"items": rows, "next_cursor": id_cursor(rows[-1]["rank"]) if more else None}


@bp.route("/<name>/segments")
class TopSegment(MethodView):
    @api_requires("segments:edit")
    @bp.arguments(ModelTopSegmentSchema)
    @bp.response(201, ModelSegmentSchema)
    def post(self, data, name):
        """Create a segment of the model's top N % (a propensity condition); refreshed at once."""
        return service.create_top_segment(current_actor(), name, data["top_percent"], data["name"])
