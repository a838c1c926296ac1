"""Request schemas and response shapes of the doctors API (web/api/hcp.py)."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from cdp.hcp import academic
from cdp.models.hcp import MEETING_KINDS, SOCIETY_ROLES, TIERS, TITLES
from web.api.partner import iso


class HcpDoctorListArgsSchema(Schema):
    rep_id = fields.Integer(load_default=None)
    tier = fields.String(load_default=None, validate=validate.OneOf(TIERS))
    verification = fields.String(
        load_default=None, validate=validate.OneOf(["verified", "unverified"])
    )
    q = fields.String(load_default=None, validate=validate.Length(max=100))
    after = fields.Integer(load_default=0)
    limit = fields.Integer(load_default=50, validate=validate.Range(1, 500))


class HcpDoctorUpdateSchema(Schema):
    hospital = fields.String(validate=validate.Length(max=200))
    department = fields.String(validate=validate.Length(max=100))
    title = fields.String(allow_none=True, validate=validate.OneOf(TITLES))
    city_tier = fields.Integer(allow_none=True, strict=True, validate=validate.Range(1, 5))
    society_role = fields.String(validate=validate.OneOf(SOCIETY_ROLES))


class HcpLicenceSchema(Schema):
    licence = fields.String(required=True, validate=validate.Length(min=1, max=32))


class HcpVerifySchema(Schema):
    method = fields.String(required=True, validate=validate.OneOf(["rep", "licence_check"]))


class HcpRepSchema(Schema):
    rep_id = fields.Integer(required=True, allow_none=True, strict=True)


class HcpTierSchema(Schema):
    tier = fields.String(required=True, allow_none=True, validate=validate.OneOf(TIERS))
    reason = fields.String(required=True, validate=validate.Length(min=1, max=200))


class HcpRedeemSchema(Schema):
    item_id = fields.Integer(required=True, strict=True)
    idempotency_key = fields.String(required=True, validate=validate.Length(min=1, max=100))


class HcpMeetingSchema(Schema):
    topic = fields.String(validate=validate.Length(min=1, max=200))
    kind = fields.String(validate=validate.OneOf(MEETING_KINDS))
    product = fields.String(validate=validate.Length(max=100))
    therapeutic_area = fields.String(validate=validate.Length(max=100))
    campaign = fields.String(validate=validate.Length(max=100))
    speaker_name = fields.String(validate=validate.Length(max=120))
    speaker_profile_id = fields.Integer(allow_none=True, strict=True)
    starts_at = fields.AwareDateTime()
    ends_at = fields.AwareDateTime(allow_none=True)
    content_id = fields.Integer(strict=True, metadata={"description": "its approved version"})
    content_version_id = fields.Integer(strict=True)
    min_minutes = fields.Integer(strict=True, validate=validate.Range(1, 600))
    points_action = fields.String(validate=validate.Length(min=1, max=64))


class HcpMeetingCreateSchema(HcpMeetingSchema):
    topic = fields.String(required=True, validate=validate.Length(min=1, max=200))
    starts_at = fields.AwareDateTime(required=True)


class HcpMeetingUpdateSchema(HcpMeetingSchema):
    status = fields.String(validate=validate.OneOf(["cancelled"]))


class HcpQuizSchema(Schema):
    questions = fields.List(fields.Dict(), required=True, validate=validate.Length(min=1, max=50))


class HcpInvitationSchema(Schema):
    profile_ids = fields.List(
        fields.Integer(strict=True), required=True, validate=validate.Length(min=1, max=500)
    )
    note = fields.String(load_default="", validate=validate.Length(max=200))


class HcpProfileRefSchema(Schema):
    profile_id = fields.Integer(required=True, strict=True)


class HcpSubmissionSchema(HcpProfileRefSchema):
    answers = fields.Dict(required=True, metadata={"description": "{question id: option(s)}"})


class HcpDecisionSchema(Schema):
    approve = fields.Boolean(required=True)
    note = fields.String(load_default="", validate=validate.Length(max=200))


class HcpCampaignArgsSchema(Schema):
    campaign = fields.String(required=True, validate=validate.Length(min=1, max=100))


class HcpMeetingListArgsSchema(Schema):
    campaign = fields.String(load_default=None, validate=validate.Length(max=100))


class HcpItemSchema(Schema):
    code = fields.String(required=True, validate=validate.Length(min=1, max=64))
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    kind = fields.String(required=True, validate=validate.OneOf(academic.ITEM_KINDS))
    points = fields.Integer(required=True, strict=True)


class HcpItemStatusSchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(["approved", "retired"]))


def dump_doctor(row) -> dict:
    return {
        "profile_id": row.profile_id,
        "hospital": row.hospital,
        "department": row.department,
        "title": row.title,
        "city_tier": row.city_tier,
        "society_role": row.society_role,
        "verification": row.verification,
        "verification_method": row.verification_method,
        "verified_at": iso(row.verified_at),
        "rep_id": row.rep_id,
        "tier": row.effective_tier,
        "computed_tier": row.tier,
        "tier_override": row.tier_override,
        "tier_override_reason": row.tier_override_reason or None,
    }


def dump_meeting(meeting) -> dict:
    names = ("id", "topic", "kind", "product", "therapeutic_area", "campaign", "speaker_name",
             "speaker_profile_id", "content_version_id", "min_minutes", "points_action", "status",
             "quiz")  # fmt: skip
    return {
        **{name: getattr(meeting, name) for name in names},
        "starts_at": iso(meeting.starts_at),
        "ends_at": iso(meeting.ends_at),
    }


def dump_participant(row) -> dict:
    names = ("id", "meeting_id", "profile_id", "invitation", "invited_via", "requested_by_id",
             "request_note", "decided_by_id", "attended_seconds")  # fmt: skip
    times = ("requested_at", "invited_at", "registered_at", "first_joined_at", "completed_at")
    return {
        **{name: getattr(row, name) for name in names},
        **{name: iso(getattr(row, name)) for name in times},
    }


def dump_award(award) -> dict:
    names = ("id", "meeting_id", "profile_id", "content_version_id", "status", "points", "reason",
             "points_entry_id")  # fmt: skip
    return {name: getattr(award, name) for name in names}


def dump_item(item) -> dict:
    names = ("id", "code", "name", "kind", "points", "status")
    return {name: getattr(item, name) for name in names}
