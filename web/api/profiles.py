"""/api/v1/profiles: look up, search and read unified profiles, their events, and undo merges."""

from __future__ import annotations

from flask import jsonify
from flask.views import MethodView

from cdp.exceptions import NotFound
from cdp.identity.merges import merge_history, unmerge
from cdp.profiles import (
    find_by_identifier,
    get_live_profile,
    identifiers_of,
    identity_summary,
    list_profiles,
    profile_events,
    search_profiles,
    view_pii,
)
from cdp.sources import list_sources
from web.api.auth import api_blueprint, api_requires
from web.api.schemas import (
    EventPageArgsSchema,
    EventPageSchema,
    ProfileArgsSchema,
    ProfileListArgsSchema,
    ProfilePageSchema,
    ProfileSchema,
    UnmergeResultSchema,
    UnmergeSchema,
    event_cursor,
    id_cursor,
)
from web.session_auth import current_actor

bp = api_blueprint("profiles", __name__, "Unified profiles (patients and doctors)")

_ONE_OR_PAGE = {
    "200": {
        "description": "with `identifier`: the one live profile; otherwise a page of profiles",
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/Profile"},
                        {"$ref": "#/components/schemas/ProfilePage"},
                    ]
                }
            }
        },
    }
}


def profile_detail(requested_id: int, reveal: bool = False) -> dict:
    """The live profile behind ``requested_id``, personal data only when revealed (audited)."""
    profile = get_live_profile(requested_id)
    detail = {
        "id": profile.id,
        "requested_id": requested_id,
        "merged_into": profile.id if profile.id != requested_id else None,
        "kind": profile.kind,
        "traits": profile.traits or {},
        "first_seen_at": profile.first_seen_at,
        "last_seen_at": profile.last_seen_at,
        "created_at": profile.created_at,
        "updated_at": profile.updated_at,
        "merges": merge_history(profile.id),
    }
    if reveal:
        detail["pii"] = view_pii(current_actor(), profile.id)  # checks profiles:pii, audits
    detail["identifiers"] = identifiers_of(profile.id, reveal=reveal)
    return detail


def _summaries(profiles) -> list[dict]:
    types = identity_summary([p.id for p in profiles])
    return [
        {
            "id": p.id,
            "kind": p.kind,
            "traits": p.traits or {},
            "identifier_types": sorted(types.get(p.id, [])),
            "first_seen_at": p.first_seen_at,
            "last_seen_at": p.last_seen_at,
        }
        for p in profiles
    ]


@bp.route("")
class Profiles(MethodView):
    @api_requires("profiles:view")
    @bp.arguments(ProfileListArgsSchema, location="query")
    @bp.response(200, ProfilePageSchema)
    @bp.doc(responses=_ONE_OR_PAGE)
    def get(self, args):
        """Look a profile up by identifier, search by `q`, or page through live profiles.

        `?identifier=phone:138 0013 8000` answers the one live profile holding it (404 if
        none). `?q=` searches ids, phone numbers, openids and exact full names. Without
        either, live profiles are listed by id (filter with `kind`, page with `cursor`).
        Lists never contain personal data.
        """
        if "identifier" in args:
            profile = find_by_identifier(*args["identifier"])
            if profile is None:
                raise NotFound("no profile has this identifier", "identifier")
            return jsonify(ProfileSchema().dump(profile_detail(profile.id)))
        if "q" in args:
            found = search_profiles(args["q"], limit=args["limit"])
            if args.get("kind"):
                found = [p for p in found if p.kind == args["kind"]]
            return {"items": _summaries(found), "next_cursor": None}
        limit = args["limit"]
        page = list_profiles(args.get("kind"), after_id=args["cursor"] or 0, limit=limit + 1)
        more, page = len(page) > limit, page[:limit]
        return {"items": _summaries(page), "next_cursor": id_cursor(page[-1].id) if more else None}


@bp.route("/<int:profile_id>")
class ProfileDetail(MethodView):
    @api_requires("profiles:view")
    @bp.arguments(ProfileArgsSchema, location="query")
    @bp.response(200, ProfileSchema)
    def get(self, args, profile_id):
        """A profile with traits, identifiers (masked) and merge history.

        A merged id answers with the live profile it was merged into (`merged_into` is set).
        `?reveal=pii` adds decrypted personal data and unmasked identifiers; it needs the
        `profiles:pii` permission (admin) and every such view is written to the audit log.
        """
        return profile_detail(profile_id, reveal=args.get("reveal") == "pii")


@bp.route("/<int:profile_id>/events")
class ProfileEvents(MethodView):
    @api_requires("profiles:view")
    @bp.arguments(EventPageArgsSchema, location="query")
    @bp.response(200, EventPageSchema)
    def get(self, args, profile_id):
        """Events of the (live) profile across every channel, newest first, cursor-paged."""
        profile = get_live_profile(profile_id)
        events, more = profile_events(profile.id, before=args["cursor"], limit=args["limit"])
        channels = {s.id: s.kind for s in list_sources()}
        items = [
            {
                "id": e.id,
                "type": e.type,
                "name": e.name,
                "timestamp": e.timestamp,
                "received_at": e.received_at,
                "source_id": e.source_id,
                "channel": channels.get(e.source_id),
                "message_id": e.message_id,
                "properties": e.properties or {},
                "context": e.context or {},
            }
            for e in events
        ]
        return {"items": items, "next_cursor": event_cursor(events[-1]) if more else None}


@bp.route("/<int:profile_id>/unmerge")
class Unmerge(MethodView):
    @api_requires("profiles:unmerge")
    @bp.arguments(UnmergeSchema)
    @bp.response(200, UnmergeResultSchema)
    def post(self, data, profile_id):
        """Undo a merge of this profile (the latest active one, or `merge_id`); admin only.

        The merged profile gets back its identifiers and events. 404 when there is no such
        merge, 409 when it was already undone or later merges build on it.
        """
        merge = unmerge(current_actor(), profile_id, data["merge_id"])
        return {
            "merge_id": merge.id,
            "survivor_id": merge.survivor_id,
            "restored_id": merge.merged_id,
            "profile_ids": [merge.survivor_id, merge.merged_id],
        }
