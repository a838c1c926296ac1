"""Marshmallow schemas of the REST API's requests and responses."""

from marshmallow import Schema, fields, validate

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
    enabled = fields.Boolean(dump_only=True)
    created_at = fields.DateTime(dump_only=True)
    urls = fields.Dict(dump_only=True)


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
