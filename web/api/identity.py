"""/api/v1/merges and /api/v1/violations: the identity graph's history and rejected events."""

from __future__ import annotations

from flask import jsonify
from flask.views import MethodView

from cdp.identity.merges import list_merges
from cdp.sources import get_violation, list_violations, reveal_violation_payload
from web.api.auth import api_blueprint, api_requires
from web.api.schemas import (
    CursorPageArgsSchema,
    MergePageSchema,
    ViolationArgsSchema,
    ViolationDetailSchema,
    ViolationListArgsSchema,
    ViolationPageSchema,
    id_cursor,
)
from web.session_auth import current_actor

merges_bp = api_blueprint("merges", __name__, "Profile merges (newest first, undoable)")
violations_bp = api_blueprint(
    "violations", __name__, "Events that broke the message spec or a tracking plan"
)


def _page(rows: list, limit: int) -> dict:
    """Rows were fetched with limit + 1: the extra one only says that there is a next page."""
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": rows, "next_cursor": id_cursor(rows[-1].id) if more else None}


@merges_bp.route("")
class Merges(MethodView):
    @api_requires("profiles:view")
    @merges_bp.arguments(CursorPageArgsSchema, location="query")
    @merges_bp.response(200, MergePageSchema)
    def get(self, args):
        """Every merge, newest first: who was folded into whom, why, and whether it was undone."""
        return _page(list_merges(before_id=args["cursor"], limit=args["limit"] + 1), args["limit"])


@violations_bp.route("")
class Violations(MethodView):
    @api_requires("sources:view")
    @violations_bp.arguments(ViolationListArgsSchema, location="query")
    @violations_bp.response(200, ViolationPageSchema)
    def get(self, args):
        """Violations newest first, optionally of one source; the message payload is not listed."""
        rows = list_violations(args.get("source_id"), args["cursor"], args["limit"] + 1)
        return _page(rows, args["limit"])


@violations_bp.route("/<int:violation_id>")
class ViolationDetail(MethodView):
    @api_requires("sources:view")
    @violations_bp.arguments(ViolationArgsSchema, location="query")
    @violations_bp.response(200, ViolationDetailSchema)
    def get(self, args, violation_id):
        """One violation. `?reveal=payload` adds the decrypted message: admin only, audited."""
        if args.get("reveal") == "payload":
            violation, payload = reveal_violation_payload(current_actor(), violation_id)
            return jsonify({**ViolationDetailSchema().dump(violation), "payload": payload})
        return get_violation(violation_id)
