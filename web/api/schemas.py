"""Marshmallow schemas of the REST API's requests and responses."""

import base64
from datetime import datetime

import orjson
from marshmallow import Schema, ValidationError, fields, validate

from cdp.exceptions import ValidationFailed
from cdp.identity.types import parse_identifier
from cdp.models.profiles import PROFILE_KINDS
from cdp.models.users import ROLES


class ErrorSchema(Schema):
    code = fields.Integer()
    status = fields.String()
    message = fields.String()
    errors = fields.Dict()


class UserSchema(Schema):
    id = fields.Integer(dump_only=True)
    email = fields.Email(required=True, validate=validate.Length(max=254))
    name = fields.String(load_default="", validate=validate.Length(max=120))
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    is_active = fields.Boolean(dump_only=True)
    created_at = fields.DateTime(dump_only=True)


class UserCreateSchema(UserSchema):
    password = fields.String(
        load_only=True, load_default=None, validate=validate.Length(min=10, max=128)
    )


class UserCreatedSchema(UserSchema):
    password = fields.String(dump_only=True, metadata={"description": "set when generated"})


class SourceSchema(Schema):
    id = fields.String(dump_only=True)
    name = fields.String(required=True, validate=validate.Length(min=1, max=120))
    kind = fields.String(required=True, validate=validate.Length(min=1, max=32))
    options = fields.Dict(load_default=dict, metadata={"description": "secrets masked on output"})
    default_profile_kind = fields.String(
        load_default="patient",
        validate=validate.OneOf(PROFILE_KINDS),
        metadata={"description": "kind of the profiles first seen through this source"},
    )
    enabled = fields.Boolean(dump_only=True)
    created_at = fields.DateTime(dump_only=True)
    urls = fields.Dict(dump_only=True)
    events = fields.Integer(dump_only=True)
    violations = fields.Integer(dump_only=True)
    last_event_at = fields.DateTime(dump_only=True, allow_none=True)


class SourceCreatedSchema(SourceSchema):
    write_key = fields.String(dump_only=True, allow_none=True)


class JobRunSchema(Schema):
    id = fields.Integer()
    kind = fields.String()
    status = fields.String()
    progress = fields.Integer()
    total = fields.Integer(allow_none=True)
    message = fields.String()
    created_at = fields.DateTime()
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)


class PageArgsSchema(Schema):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))


# --- Paging --------------------------------------------------------------------------------
# A cursor is opaque to clients: urlsafe base64 (no padding) of a small JSON array.


def encode_cursor(values: list) -> str:
    raw = orjson.dumps(values)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(text: str) -> list:
    """The JSON array inside a cursor; ValueError if it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        values = orjson.loads(raw)
    except (ValueError, TypeError, orjson.JSONDecodeError):
        raise ValueError("not a cursor") from None
    if not isinstance(values, list):
        raise ValueError("not a cursor")
    return values


def event_cursor(event) -> str:
    return encode_cursor([event.timestamp.isoformat(), event.id])


def decode_event_cursor(text: str) -> tuple[datetime, int]:
    """(timestamp, id) of the last event of the previous page."""
    values = decode_cursor(text)
    if len(values) != 2 or not isinstance(values[0], str) or type(values[1]) is not int:
        raise ValueError("not an event cursor")
    stamp = datetime.fromisoformat(values[0])
    if stamp.tzinfo is None:
        raise ValueError("not an event cursor")
    return stamp, values[1]


def id_cursor(row_id: int) -> str:
    return encode_cursor([row_id])


def decode_id_cursor(text: str) -> int:
    values = decode_cursor(text)
    if len(values) != 1 or type(values[0]) is not int or values[0] < 1:
        raise ValueError("not a cursor")
    return values[0]


class _CursorField(fields.String):
    decoder = staticmethod(decode_id_cursor)

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return self.decoder(text)
        except ValueError:
            raise ValidationError("invalid cursor; pass next_cursor of the previous page") from None


class IdCursor(_CursorField):
    """Opaque cursor; loads to the id of the last row of the previous page."""


class EventCursor(_CursorField):
    """Opaque cursor; loads to (timestamp, id) of the last event of the previous page."""

    decoder = staticmethod(decode_event_cursor)


class IdentifierField(fields.String):
    """``type[:namespace]:value``; loads to (type, namespace, value)."""

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return parse_identifier(text)
        except ValidationFailed as exc:
            raise ValidationError(exc.message) from None


class CursorPageArgsSchema(Schema):
    cursor = IdCursor(load_default=None, metadata={"description": "next_cursor of the last page"})
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))


class PageSchema(Schema):
    next_cursor = fields.String(
        allow_none=True, metadata={"description": "pass as ?cursor= for the next page; null: last"}
    )


# --- Profiles --------------------------------------------------------------------------------


class ProfileListArgsSchema(CursorPageArgsSchema):
    identifier = IdentifierField(
        metadata={
            "description": "look one profile up by identifier, `type[:namespace]:value`, "
            "e.g. `phone:13800138000` or `wechat_openid:wx1234:o6_bm…`"
        }
    )
    q = fields.String(
        validate=validate.Length(min=1, max=200),
        metadata={"description": "search by profile id, phone, openid/unionid/user id, full name"},
    )
    kind = fields.String(validate=validate.OneOf(PROFILE_KINDS))


class ProfileArgsSchema(Schema):
    reveal = fields.String(
        validate=validate.OneOf(["pii"]),
        metadata={"description": "`pii`: include decrypted personal data (audited; profiles:pii)"},
    )


class IdentifierSchema(Schema):
    type = fields.String()
    namespace = fields.String()
    value = fields.String(metadata={"description": "personal identifiers masked unless revealed"})
    source_id = fields.String(allow_none=True)
    created_at = fields.DateTime()


class MergeSchema(Schema):
    id = fields.Integer()
    survivor_id = fields.Integer()
    merged_id = fields.Integer()
    created_at = fields.DateTime()
    source_id = fields.String(allow_none=True)
    message_id = fields.String(allow_none=True)
    linked_by = fields.List(fields.String(), metadata={"description": "identifier types"})
    moved_identities = fields.Function(lambda m: len(m.moved_identity_ids or []))
    moved_events = fields.Function(lambda m: len(m.moved_event_ids or []))
    undone_at = fields.DateTime(allow_none=True)
    undone_by_id = fields.Integer(allow_none=True)


class MergePageSchema(PageSchema):
    items = fields.List(fields.Nested(MergeSchema))


class ProfileSummarySchema(Schema):
    id = fields.Integer()
    kind = fields.String()
    traits = fields.Dict(metadata={"description": "non-identifying traits"})
    identifier_types = fields.List(fields.String())
    first_seen_at = fields.DateTime(allow_none=True)
    last_seen_at = fields.DateTime(allow_none=True)


class ProfilePageSchema(PageSchema):
    items = fields.List(fields.Nested(ProfileSummarySchema))


class ProfileSchema(Schema):
    id = fields.Integer(metadata={"description": "the live profile"})
    requested_id = fields.Integer(metadata={"description": "the id asked for"})
    merged_into = fields.Integer(
        allow_none=True,
        metadata={"description": "set when requested_id was merged: the live profile's id"},
    )
    kind = fields.String()
    traits = fields.Dict(metadata={"description": "non-identifying traits"})
    pii = fields.Dict(
        metadata={"description": "decrypted personal data; only with ?reveal=pii (audited)"}
    )
    identifiers = fields.List(fields.Nested(IdentifierSchema))
    first_seen_at = fields.DateTime(allow_none=True)
    last_seen_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    merges = fields.List(fields.Nested(MergeSchema), metadata={"description": "newest first"})


class EventPageArgsSchema(Schema):
    cursor = EventCursor(
        load_default=None, metadata={"description": "next_cursor of the last page"}
    )
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))


class EventSchema(Schema):
    id = fields.Integer()
    type = fields.String()
    name = fields.String(allow_none=True)
    timestamp = fields.DateTime()
    received_at = fields.DateTime()
    source_id = fields.String()
    channel = fields.String(allow_none=True, metadata={"description": "kind of the source"})
    message_id = fields.String()
    properties = fields.Dict()
    context = fields.Dict()


class EventPageSchema(PageSchema):
    items = fields.List(fields.Nested(EventSchema))


class UnmergeSchema(Schema):
    merge_id = fields.Integer(
        load_default=None, metadata={"description": "default: the profile's latest active merge"}
    )


class UnmergeResultSchema(Schema):
    merge_id = fields.Integer()
    survivor_id = fields.Integer()
    restored_id = fields.Integer(metadata={"description": "the profile brought back"})
    profile_ids = fields.List(fields.Integer(), metadata={"description": "both live profiles"})


# --- Violations ------------------------------------------------------------------------------


class ViolationListArgsSchema(CursorPageArgsSchema):
    source_id = fields.String(validate=validate.Length(max=32))


class ViolationArgsSchema(Schema):
    reveal = fields.String(
        validate=validate.OneOf(["payload"]),
        metadata={"description": "`payload`: include the decrypted message (audited; admin)"},
    )


class ViolationSchema(Schema):
    id = fields.Integer()
    source_id = fields.String()
    received_at = fields.DateTime()
    message_id = fields.String(allow_none=True)
    event_type = fields.String(allow_none=True)
    event_name = fields.String(allow_none=True)
    index = fields.Integer(attribute="batch_index", allow_none=True)
    field = fields.String()
    reason = fields.String()
    rejected = fields.Boolean(metadata={"description": "false: stored but flagged"})


class ViolationDetailSchema(ViolationSchema):
    payload = fields.Raw(metadata={"description": "only with ?reveal=payload (audited)"})


class ViolationPageSchema(PageSchema):
    items = fields.List(fields.Nested(ViolationSchema))


class RotatedKeySchema(Schema):
    id = fields.String()
    write_key = fields.String(metadata={"description": "shown once; the old key stops working"})


class TrackingPlanSchema(Schema):
    plan = fields.Dict(
        required=True,
        allow_none=True,
        metadata={
            "description": '{"mode": "allow|flag|block", "events": {"<name>": <JSON Schema of '
            "its properties>}}; null removes the plan (cdp/ingest/tracking_plan.schema.json)"
        },
    )
