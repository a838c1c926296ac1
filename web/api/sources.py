"""/api/v1/sources: list (with stats), create, rotate the write key, and tracking plans."""

from flask import current_app
from flask.views import MethodView

from cdp.ingest.plans import set_tracking_plan
from cdp.sources import (
    create_source,
    endpoint_urls,
    get_source,
    list_sources,
    masked_options,
    rotate_write_key,
    source_stats,
)
from web.api.auth import api_blueprint, api_requires
from web.api.schemas import (
    RotatedKeySchema,
    SourceCreatedSchema,
    SourceSchema,
    TrackingPlanSchema,
)
from web.session_auth import current_actor

bp = api_blueprint("sources", __name__, "Data sources")

_NO_STATS = {"events": 0, "violations": 0, "last_event_at": None}


def _dump(source, stats=None, **extra) -> dict:
    return {
        "id": source.id,
        "name": source.name,
        "kind": source.kind,
        "default_profile_kind": source.default_profile_kind,
        "options": masked_options(source),
        "enabled": source.enabled,
        "created_at": source.created_at,
        "urls": endpoint_urls(source, current_app.config["PUBLIC_URL"]),
        **(stats or _NO_STATS),
        **extra,
    }


@bp.route("")
class Sources(MethodView):
    @api_requires("sources:view")
    @bp.response(200, SourceSchema(many=True))
    def get(self):
        """List sources with masked options, endpoint URLs and event/violation counts."""
        sources = list_sources()
        stats = source_stats([s.id for s in sources])
        return [_dump(s, stats[s.id]) for s in sources]

    @api_requires("sources:edit")
    @bp.arguments(SourceSchema)
    @bp.response(201, SourceCreatedSchema)
    def post(self, data):
        """Create a source; its write key (if the kind has one) is returned once."""
        source, write_key = create_source(
            current_actor(),
            data["name"],
            data["kind"],
            data["options"],
            default_profile_kind=data["default_profile_kind"],
        )
        return _dump(source, write_key=write_key)


@bp.route("/<source_id>/rotate-key")
class RotateKey(MethodView):
    @api_requires("sources:edit")
    @bp.response(200, RotatedKeySchema)
    def post(self, source_id):
        """Issue a new write key (returned once); the old key stops working immediately."""
        source, write_key = rotate_write_key(current_actor(), source_id)
        return {"id": source.id, "write_key": write_key}


@bp.route("/<source_id>/tracking-plan")
class TrackingPlan(MethodView):
    @api_requires("sources:view")
    @bp.response(200, TrackingPlanSchema)
    def get(self, source_id):
        """The source's tracking plan (null: none, every event is accepted)."""
        return {"plan": get_source(source_id).tracking_plan}

    @api_requires("sources:edit")
    @bp.arguments(TrackingPlanSchema)
    @bp.response(200, TrackingPlanSchema)
    def put(self, data, source_id):
        """Set (or with null remove) the tracking plan; the API applies it within seconds."""
        source = set_tracking_plan(current_actor(), source_id, data["plan"])
        return {"plan": source.tracking_plan}
