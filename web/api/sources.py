"""/api/v1/sources: list and create data sources."""

from flask import current_app
from flask.views import MethodView

from cdp.sources import create_source, endpoint_urls, list_sources, masked_options
from web.api.auth import api_blueprint, api_requires
from web.api.schemas import SourceCreatedSchema, SourceSchema
from web.session_auth import current_actor

bp = api_blueprint("sources", __name__, "Data sources")


def _dump(source, **extra) -> dict:
    return {
        "id": source.id,
        "name": source.name,
        "kind": source.kind,
        "options": masked_options(source),
        "enabled": source.enabled,
        "created_at": source.created_at,
        "urls": endpoint_urls(source, current_app.config["PUBLIC_URL"]),
        **extra,
    }


@bp.route("")
class Sources(MethodView):
    @api_requires("sources:view")
    @bp.response(200, SourceSchema(many=True))
    def get(self):
        """List sources with masked options and endpoint URLs."""
        return [_dump(s) for s in list_sources()]

    @api_requires("sources:edit")
    @bp.arguments(SourceSchema)
    @bp.response(201, SourceCreatedSchema)
    def post(self, data):
        """Create a source; its write key (if the kind has one) is returned once."""
        source, write_key = create_source(
            current_actor(), data["name"], data["kind"], data["options"]
        )
        return _dump(source, write_key=write_key)
