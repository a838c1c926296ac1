"""/api/v1/content: the content library, its MLR review workflow, and previews."""

from __future__ import annotations

from flask.views import MethodView
from marshmallow import Schema, fields, validate

from cdp.content import operations as ops
from cdp.content.library import (
    get_item,
    latest_versions,
    list_items,
    review_queue,
    transitions_of,
    version_by_number,
    versions_of,
)
from cdp.content.preview import preview
from cdp.exceptions import NotFound
from cdp.models.content import (
    AUDIENCES,
    CATEGORIES,
    CONTENT_KINDS,
    PRODUCT_CLASSES,
    VERSION_STATES,
)
from web.api.auth import api_blueprint, api_requires
from web.api.schemas import CursorPageArgsSchema, PageSchema, id_cursor
from web.session_auth import current_actor

bp = api_blueprint("content", __name__, "Content library with medical/legal (MLR) review")


class VersionFieldsSchema(Schema):
    body = fields.Dict(metadata={"description": "kind-specific templates (docs/content.md)"})
    audience = fields.String(validate=validate.OneOf(AUDIENCES))
    products = fields.List(fields.String(validate=validate.Length(max=100)))
    product_class = fields.String(validate=validate.OneOf(PRODUCT_CLASSES))
    therapeutic_area = fields.String(validate=validate.Length(max=100))
    category = fields.String(validate=validate.OneOf(CATEGORIES))
    expires_on = fields.Date(allow_none=True)
    approval_code = fields.String(allow_none=True, validate=validate.Length(max=64))


class ContentCreateSchema(VersionFieldsSchema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    kind = fields.String(required=True, validate=validate.OneOf(CONTENT_KINDS))


class TransitionSchema(Schema):
    from_status = fields.String(allow_none=True)
    to_status = fields.String()
    actor_id = fields.Integer(allow_none=True)
    comment = fields.String()
    at = fields.DateTime()


class VersionSchema(VersionFieldsSchema):
    id = fields.Integer()
    item_id = fields.Integer()
    number = fields.Integer()
    status = fields.String()
    variables = fields.List(fields.String())
    author_id = fields.Integer(allow_none=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    submitted_at = fields.DateTime(allow_none=True)
    reviewed_at = fields.DateTime(allow_none=True)
    reviewed_by_id = fields.Integer(allow_none=True)
    history = fields.List(fields.Nested(TransitionSchema))


class ItemSchema(Schema):
    id = fields.Integer()
    name = fields.String()
    kind = fields.String()
    created_by_id = fields.Integer(allow_none=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    latest = fields.Nested(VersionSchema, allow_none=True)
    versions = fields.List(fields.Nested(VersionSchema))


class ItemPageSchema(PageSchema):
    items = fields.List(fields.Nested(ItemSchema))


class ItemListArgsSchema(CursorPageArgsSchema):
    status = fields.String(validate=validate.OneOf(VERSION_STATES))
    kind = fields.String(validate=validate.OneOf(CONTENT_KINDS))


class ActionSchema(Schema):
    comment = fields.String(load_default="", validate=validate.Length(max=2000))


class ApproveSchema(ActionSchema):
    approval_code = fields.String(
        load_default=None, validate=validate.Length(max=64), metadata={"description": "MLR no."}
    )


class PreviewArgsSchema(Schema):
    profile_id = fields.Integer(required=True)
    version = fields.Integer(load_default=None, metadata={"description": "default: latest"})
    context = fields.Dict(load_default=dict, metadata={"description": "journey context values"})
    channel = fields.String(load_default=None)


class PreviewSchema(Schema):
    version_id = fields.Integer()
    profile_id = fields.Integer()
    channel = fields.String()
    message = fields.Dict(allow_none=True)
    problems = fields.List(fields.String())
    blocked = fields.List(fields.Dict(), metadata={"description": "send guard refusals"})
    pii_fields = fields.List(fields.String(), metadata={"description": "decrypted (audited)"})


class QueueEntrySchema(Schema):
    item = fields.Nested(ItemSchema)
    version = fields.Nested(VersionSchema)


def _version(version, history: bool = True) -> dict:
    data = {name: getattr(version, name) for name in VersionSchema().fields if name != "history"}
    if history:
        data["history"] = transitions_of([version.id])
    return data


def _item(item, latest=None, versions=None) -> dict:
    data = {name: getattr(item, name) for name in ("id", "name", "kind", "created_by_id")}
    data.update(created_at=item.created_at, updated_at=item.updated_at)
    data["latest"] = _version(latest, history=False) if latest else None
    if versions is not None:
        data["versions"] = [_version(v) for v in versions]
    return data


@bp.route("")
class ContentItems(MethodView):
    @api_requires("content:view")
    @bp.arguments(ItemListArgsSchema, location="query")
    @bp.response(200, ItemPageSchema)
    def get(self, args):
        """Content items by id with their latest version; filter by `status` or `kind`."""
        page = list_items(args.get("status"), args.get("kind"), args["limit"], args["cursor"] or 0)
        latest = latest_versions([i.id for i in page])
        more = len(page) == args["limit"]
        return {
            "items": [_item(i, latest.get(i.id)) for i in page],
            "next_cursor": id_cursor(page[-1].id) if more else None,
        }

    @api_requires("content:edit")
    @bp.arguments(ContentCreateSchema)
    @bp.response(201, ItemSchema)
    def post(self, data):
        """Create an item with its first draft version."""
        name, kind = data.pop("name"), data.pop("kind")
        version = ops.create_item(current_actor(), name, kind, **data)
        return _item(get_item(version.item_id), version, [version])


@bp.route("/review-queue")
class ReviewQueue(MethodView):
    @api_requires("content:review")
    @bp.response(200, QueueEntrySchema(many=True))
    def get(self):
        """Submitted versions waiting for a reviewer, oldest first."""
        return [{"item": _item(i), "version": _version(v)} for i, v in review_queue()]


@bp.route("/<int:content_id>")
class ContentItem(MethodView):
    @api_requires("content:view")
    @bp.response(200, ItemSchema)
    def get(self, content_id):
        """An item with every version and its review history."""
        item = get_item(content_id)
        versions = versions_of(item.id)
        return _item(item, versions[0] if versions else None, versions)


@bp.route("/<int:content_id>/versions")
class Versions(MethodView):
    @api_requires("content:edit")
    @bp.arguments(VersionFieldsSchema)
    @bp.response(201, VersionSchema)
    def post(self, data, content_id):
        """A new draft from the latest version (how approved content is changed)."""
        return _version(ops.new_version(current_actor(), content_id, **data))


@bp.route("/<int:content_id>/versions/<int:number>")
class Version(MethodView):
    @api_requires("content:view")
    @bp.response(200, VersionSchema)
    def get(self, content_id, number):
        return _version(version_by_number(content_id, number))

    @api_requires("content:edit")
    @bp.arguments(VersionFieldsSchema)
    @bp.response(200, VersionSchema)
    def patch(self, data, content_id, number):
        """Edit a draft (approved versions are frozen: 409)."""
        version = version_by_number(content_id, number)
        return _version(ops.update_draft(current_actor(), version.id, **data))


def _action(name: str, permission: str, schema, doc: str):
    class Action(MethodView):
        @api_requires(permission)
        @bp.arguments(schema)
        @bp.response(200, VersionSchema)
        def post(self, data, content_id, number):
            version = version_by_number(content_id, number)
            comment = data.pop("comment", "")
            if name == "submit":
                version = ops.submit(current_actor(), version.id, comment)
            elif name == "approve":
                version = ops.approve(current_actor(), version.id, comment, data["approval_code"])
            elif name == "reject":
                version = ops.reject(current_actor(), version.id, comment)
            else:
                version = ops.withdraw(current_actor(), version.id, comment)
            return _version(version)

    Action.post.__doc__ = doc
    Action.__name__ = f"{name.title()}Version"
    bp.route(f"/<int:content_id>/versions/<int:number>/{name}")(Action)


_action("submit", "content:edit", ActionSchema, "Submit a draft for MLR review.")
_action(
    "approve",
    "content:review",
    ApproveSchema,
    "Approve and freeze a submitted version (reviewers; never your own).",
)
_action("reject", "content:review", ActionSchema, "Reject a submitted version with a comment.")
_action(
    "withdraw",
    "content:view",
    ActionSchema,
    "Withdraw a submitted or approved version: pending sends of it stop "
    "(needs content:edit or content:review).",
)


@bp.route("/<int:content_id>/preview")
class Preview(MethodView):
    @api_requires("content:preview")
    @bp.arguments(PreviewArgsSchema)
    @bp.response(200, PreviewSchema)
    def post(self, data, content_id):
        """Render a version as a profile; lists render problems and send-guard refusals.

        Personal data the template uses (e.g. `profile.name`) is decrypted for the preview
        and the preview is written to the audit log.
        """
        if data["version"] is None:
            versions = versions_of(get_item(content_id).id)
            if not versions:
                raise NotFound("this item has no version", "version")
            version = versions[0]
        else:
            version = version_by_number(content_id, data["version"])
        return preview(
            current_actor(), version.id, data["profile_id"], data["context"], data["channel"]
        )
