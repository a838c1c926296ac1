"""/api/v1/profiles/{id}/consents: a person's consent history and current answers."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from cdp.consent import PURPOSES, consent_history, consent_states, set_consent
from cdp.models.consent import CHANNELS, STATUSES
from cdp.profiles import get_live_profile
from web.api.auth import api_requires, authenticate_request
from web.session_auth import current_actor

bp = Blueprint(
    "consents",
    __name__,
    url_prefix="/api/v1/profiles",
    description="Consent per profile, purpose and channel (PIPL)",
)
bp.before_request(authenticate_request)


class ConsentRecordSchema(Schema):
    id = fields.Integer()
    purpose = fields.String()
    channel = fields.String()
    status = fields.String()
    recorded_at = fields.DateTime()
    source_id = fields.String(allow_none=True)
    evidence = fields.Dict()
    actor = fields.String(allow_none=True)


class ConsentStateSchema(Schema):
    purpose = fields.String()
    channel = fields.String()
    status = fields.String()
    updated_at = fields.DateTime()


class ConsentsSchema(Schema):
    profile_id = fields.Integer(metadata={"description": "the live profile"})
    current = fields.List(fields.Nested(ConsentStateSchema))
    history = fields.List(
        fields.Nested(ConsentRecordSchema), metadata={"description": "newest first"}
    )


class ConsentCreateSchema(Schema):
    purpose = fields.String(required=True, validate=validate.OneOf(PURPOSES))
    channel = fields.String(load_default="*", validate=validate.OneOf(CHANNELS))
    status = fields.String(required=True, validate=validate.OneOf(STATUSES))
    evidence = fields.Dict(
        load_default=dict,
        metadata={"description": 'e.g. {"policy_version": "2026-06", "form": "paper"}'},
    )
    at = fields.AwareDateTime(load_default=None, metadata={"description": "default: now"})


@bp.route("/<int:profile_id>/consents")
class Consents(MethodView):
    @api_requires("consents:view")
    @bp.response(200, ConsentsSchema)
    def get(self, profile_id):
        """Current consent per purpose and channel, and the full history (newest first)."""
        profile = get_live_profile(profile_id)
        return {
            "profile_id": profile.id,
            "current": consent_states(profile.id),
            "history": consent_history(profile.id),
        }

    @api_requires("consents:edit")
    @bp.arguments(ConsentCreateSchema)
    @bp.response(201, ConsentRecordSchema)
    def post(self, data, profile_id):
        """Record a grant or withdrawal (e.g. a signed form); audited, kept in the history."""
        return set_consent(
            current_actor(),
            profile_id,
            data["purpose"],
            data["channel"],
            data["status"],
            evidence=data["evidence"],
            at=data["at"],
        )
