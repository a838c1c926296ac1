"""/api/v1/partner: the partner pharmacy API (member sync, coupons at the till, points).

Authenticated with a partner key (``Authorization: Bearer pk_…``), never a user token.
The tenant is the partner the key belongs to; no header or parameter can change it, and
another partner's member, coupon, redemption or points entry is always a 404.
"""

from __future__ import annotations

from flask import current_app, g, request, url_for
from flask.views import MethodView
from flask_smorest import Blueprint, abort
from marshmallow import Schema, fields, validate

from cdp.loyalty import coupons, feed, ledger, points, redemptions
from cdp.loyalty.codes import display
from cdp.loyalty.common import to_fen, yuan
from cdp.loyalty.partners import PartnerActor, authenticate_key, get_partner, list_stores
from cdp.loyalty.syncs import get_sync, rejected_rows, start_sync
from connectors.pharmacy import parse_upload
from web.api.schemas import decode_cursor, encode_cursor
from web.extensions import limiter
from web.session_auth import client_ip

bp = Blueprint(
    "partner",
    __name__,
    url_prefix="/api/v1/partner",
    description="Partner pharmacy API (partner key as the bearer token)",
)
_QUERY_KEY_PARAMS = ("access_token", "token", "api_key", "apikey", "key")


def _partner_key_bucket() -> str:
    """Rate-limit bucket: the presented key's public prefix (one bucket per partner key).

    Runs before authentication, so an unknown key only spends its own bucket.
    """
    _, _, raw = request.headers.get("Authorization", "").partition(" ")
    return "partner:" + (raw.strip()[:16] or client_ip())


def _partner_limit() -> str:
    return current_app.config.get("PARTNER_RATE_LIMIT") or "1200 per minute"


# One noisy partner (a till system in a retry loop) cannot starve the others.
limiter.limit(_partner_limit, key_func=_partner_key_bucket)(bp)


@bp.before_request
def authenticate_partner() -> None:
    """Require a partner key in the Authorization header; the key decides the tenant."""
    challenge = {"WWW-Authenticate": 'Bearer realm="cdp-partner"'}
    if any(name in request.args for name in _QUERY_KEY_PARAMS):
        abort(401, message="keys are not accepted in the query string", headers=challenge)
    scheme, _, raw = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not raw.strip():
        abort(401, message="missing partner key in the Authorization header", headers=challenge)
    key = authenticate_key(raw.strip())
    if key is None:
        abort(401, message="invalid or revoked partner key", headers=challenge)
    g.partner_actor = PartnerActor(
        kind="partner",
        role="partner",
        partner_id=key.partner_id,
        ip=client_ip(),
        request_id=g.get("request_id"),
        token_id=key.id,
    )


def actor() -> PartnerActor:
    return g.partner_actor


# --- schemas ----------------------------------------------------------------------------------


class PartnerMemberArgs(Schema):
    member = fields.String(metadata={"description": "the member's card number"})
    phone = fields.String(metadata={"description": "or the member's mobile phone"})


class PartnerChangesArgs(Schema):
    since = fields.String(load_default=None, metadata={"description": "next_cursor of last call"})
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))


class PartnerRedeemSchema(Schema):
    store_code = fields.String(required=True)
    order_id = fields.String(required=True)
    amount = fields.Raw(load_default=0, metadata={"description": "order amount in yuan"})
    product_codes = fields.List(fields.String(), load_default=list)


class PartnerVoidSchema(Schema):
    reason = fields.String(load_default="", validate=validate.Length(max=200))


class PartnerEarnSchema(PartnerMemberArgs):
    order_id = fields.String(required=True)
    store_code = fields.String(required=True)
    items = fields.List(
        fields.Dict(),
        required=True,
        metadata={"description": '[{"product_code", "amount" (yuan), "rx" if not catalogued}]'},
    )
    idempotency_key = fields.String(load_default=None)


class PartnerBurnSchema(PartnerMemberArgs):
    points = fields.Integer(required=True, strict=True)
    order_id = fields.String(required=True)
    store_code = fields.String(required=True)
    idempotency_key = fields.String(load_default=None)


class PartnerReverseSchema(Schema):
    entry_id = fields.Integer(required=True, strict=True)
    idempotency_key = fields.String(load_default=None)
    reason = fields.String(load_default="", validate=validate.Length(max=200))


# --- dumps ------------------------------------------------------------------------------------


def dump_coupon(coupon, campaign) -> dict:
    value = campaign.value if campaign.type == "percent_off" else yuan(campaign.value)
    return {
        "code": display(coupon.code),
        "status": coupon.status,
        "valid_from": iso(coupon.valid_from),
        "expires_at": iso(coupon.expires_at),
        "redeemed_at": iso(coupon.redeemed_at),
        "campaign": {
            "id": campaign.id,
            "name": campaign.name,
            "type": campaign.type,
            "value": value,
            "min_spend": yuan(campaign.min_spend),
            "products": campaign.products,
            "store_codes": campaign.store_codes,
        },
    }


def dump_redemption(redemption, code: str) -> dict:
    return {
        "id": redemption.id,
        "code": display(code),
        "store_code": redemption.store_code,
        "order_id": redemption.order_id,
        "amount": yuan(redemption.amount),
        "discount": yuan(redemption.discount),
        "redeemed_at": iso(redemption.redeemed_at),
        "voided_at": iso(redemption.voided_at),
    }


def dump_points(result, card_no: str | None = None) -> dict:
    entry = result.entry
    return {
        "entry_id": entry.id,
        "kind": entry.kind,
        "points": entry.points,
        "balance": result.balance,
        "order_id": entry.order_id,
        "replayed": result.replayed,
        **({"member": card_no} if card_no else {}),
    }


def dump_sync(sync, rows: list | None = None) -> dict:
    results = [
        {
            "index": i,
            "status": status,
            "reason": reason,
            **({"card_no": _card(rows[i])} if rows is not None else {}),
        }
        for i, (status, reason) in enumerate(sync.results or [])
    ]
    return {
        "sync_id": sync.id,
        "status": sync.status,
        "total": sync.total,
        "processed": sync.processed,
        "created": sync.created,
        "updated": sync.updated,
        "unchanged": sync.unchanged,
        "rejected": sync.rejected,
        "created_at": iso(sync.created_at),
        "finished_at": iso(sync.finished_at),
        "error": sync.error or None,
        "results": results,
        "url": url_for("partner.MemberSyncView", sync_id=sync.id),
    }


def iso(value) -> str | None:
    return value.isoformat() if value is not None else None


def _card(raw) -> str | None:
    return str(raw.get("card_no"))[:64] if isinstance(raw, dict) and raw.get("card_no") else None


def _idempotency(data: dict) -> str | None:
    return data.get("idempotency_key") or request.headers.get("Idempotency-Key") or None


# --- members ----------------------------------------------------------------------------------


@bp.route("/me")
class Me(MethodView):
    def get(self):
        """The partner this key belongs to, and its stores."""
        partner = get_partner(actor().partner_id)
        stores = [{"code": s.code, "name": s.name, "city": s.city} for s in list_stores(partner.id)]
        return {"id": partner.id, "code": partner.code, "name": partner.name, "stores": stores}


@bp.route("/members")
class Members(MethodView):
    @bp.response(200)
    @bp.alt_response(202, description="large upload: queued as a background sync")
    def post(self):
        """Upsert members: a JSON array (or {"members": [...]}) or a CSV file, ≤ 10,000 rows.

        Each row: ``card_no`` (required), ``phone``, ``name``, ``gender``, ``birth_date``,
        ``store_code``, ``joined_at``, ``consents`` (e.g. ``{"sms": true}``). The answer
        gives every row's outcome: created, updated, unchanged or rejected with a reason.
        """
        upload = request.files.get("file")
        if upload is not None:
            rows, fmt = parse_upload(upload.read(), upload.mimetype or "text/csv")
        else:
            rows, fmt = parse_upload(request.get_data(), request.content_type or "")
        sync = start_sync(actor(), actor().partner_id, rows, fmt)
        if sync.status in ("queued", "running"):
            return dump_sync(sync), 202
        return dump_sync(sync, rows)


@bp.route("/member-syncs/<int:sync_id>")
class MemberSyncView(MethodView):
    def get(self, sync_id: int):
        """Progress and per-row outcome of one member upload."""
        return dump_sync(get_sync(sync_id, actor().partner_id))


@bp.route("/member-syncs/<int:sync_id>/rejected")
class RejectedRows(MethodView):
    def get(self, sync_id: int):
        """The rejected rows of an upload with their reasons."""
        return {"items": rejected_rows(actor(), sync_id, actor().partner_id)}


@bp.route("/members/changes")
class MemberChanges(MethodView):
    @bp.arguments(PartnerChangesArgs, location="query")
    def get(self, args):
        """Changes on our side for your members (coupons, points, consent), oldest first.

        Pass ``next_cursor`` back as ``since``; an empty page keeps the same cursor.
        """
        since = None
        if args["since"]:
            try:
                values = decode_cursor(args["since"])
                if len(values) != 2 or not all(type(v) is int for v in values):
                    raise ValueError
                since = (values[0], values[1])
            except ValueError:
                abort(422, message="since: not a cursor of this feed")
        rows, cursor, more = feed.member_changes(actor(), since, args["limit"])
        return {
            "items": [
                {"card_no": c.card_no, "type": c.kind, "data": c.data, "at": iso(c.created_at)}
                for c in rows
            ],
            "next_cursor": encode_cursor(list(cursor)) if cursor else None,
            "has_more": more,
        }


@bp.route("/members/<card_no>")
class MemberView(MethodView):
    def get(self, card_no: str):
        """One member: store, join date, synced consent flags, points and usable coupons."""
        member = feed.member_record(actor(), card_no)
        profile_id, _ = feed.find_member(actor(), card_no=card_no)
        return {
            "card_no": member.card_no,
            "store_code": member.store_code,
            "joined_at": iso(member.joined_at),
            "consents": member.consents,
            "updated_at": iso(member.updated_at),
            "points": ledger.balance(profile_id),
            "usable_coupons": len(coupons.usable_coupons(actor(), profile_id)),
        }


# --- coupons ----------------------------------------------------------------------------------


def _member_coupons(args: dict) -> dict:
    profile_id, card = feed.find_member(actor(), args.get("member"), args.get("phone"))
    usable = coupons.usable_coupons(actor(), profile_id)
    return {"member": card, "items": [dump_coupon(c, k) for c, k in usable]}


@bp.route("/coupons")
class MemberCoupons(MethodView):
    @bp.arguments(PartnerMemberArgs, location="query")
    def get(self, args):
        """Coupons a member can use here now, by card (``member``) or ``phone``."""
        return _member_coupons(args)


@bp.route("/coupons/lookup")
class CouponLookup(MethodView):
    @bp.arguments(PartnerMemberArgs)
    def post(self, args):
        """The same lookup with the phone in the body (keeps it out of URLs and access logs)."""
        return _member_coupons(args)


@bp.route("/coupons/<code>")
class CouponView(MethodView):
    def get(self, code: str):
        """One coupon by its code (422 when the code fails its check character: a typo)."""
        return dump_coupon(*coupons.partner_coupon(actor(), code))


@bp.route("/coupons/<code>/redeem")
class Redeem(MethodView):
    @bp.arguments(PartnerRedeemSchema)
    def post(self, data, code: str):
        """Redeem once: a second call for the same code gets 409."""
        redemption, normalised = redemptions.redeem(
            actor(),
            code,
            data["store_code"],
            data["order_id"],
            to_fen(data["amount"], "amount", allow_zero=True),
            data["product_codes"],
        )
        return dump_redemption(redemption, normalised), 201


@bp.route("/redemptions")
class Redemptions(MethodView):
    def get(self):
        """Your redemptions, oldest first (``?after=<id>`` pages on)."""
        after = request.args.get("after", 0, type=int)
        rows = redemptions.partner_redemptions(actor(), after_id=after, limit=100)
        return {"items": [dump_redemption(r, code) for r, code in rows]}


@bp.route("/redemptions/<int:redemption_id>/void")
class VoidRedemption(MethodView):
    @bp.arguments(PartnerVoidSchema)
    def post(self, data, redemption_id: int):
        """Undo a redemption within the void window; the coupon can be used again."""
        redemption, coupon = redemptions.void_redemption(actor(), redemption_id, data["reason"])
        return dump_redemption(redemption, coupon.code)


# --- points -----------------------------------------------------------------------------------


@bp.route("/points")
class Points(MethodView):
    @bp.arguments(PartnerMemberArgs, location="query")
    def get(self, args):
        """A member's points balance and the next points to expire."""
        profile_id, card = feed.find_member(actor(), args.get("member"), args.get("phone"))
        soon, when = ledger.expiring(profile_id)
        return {
            "member": card,
            "balance": ledger.balance(profile_id),
            "expiring": {"points": soon, "at": iso(when)},
        }


@bp.route("/points/earn")
class Earn(MethodView):
    @bp.arguments(PartnerEarnSchema)
    def post(self, data):
        """Points for an order (per yuan on eligible, non-prescription items), once per order."""
        profile_id, card = feed.find_member(actor(), data.get("member"), data.get("phone"))
        result = points.earn_purchase(
            actor(), profile_id, data["order_id"], data["store_code"], data["items"],
            _idempotency(data),
        )  # fmt: skip
        return dump_points(result, card), 200 if result.replayed else 201


@bp.route("/points/burn")
class Burn(MethodView):
    @bp.arguments(PartnerBurnSchema)
    def post(self, data):
        """Spend points on an order; 409 when the balance is short."""
        profile_id, card = feed.find_member(actor(), data.get("member"), data.get("phone"))
        result = points.burn(
            actor(), profile_id, data["points"], data["order_id"], data["store_code"],
            _idempotency(data),
        )  # fmt: skip
        return dump_points(result, card), 200 if result.replayed else 201


@bp.route("/points/reverse")
class Reverse(MethodView):
    @bp.arguments(PartnerReverseSchema)
    def post(self, data):
        """Reverse one of your earn or burn entries (a return, a cancelled order)."""
        key = _idempotency(data) or f"reverse:{data['entry_id']}"
        result = points.reverse(actor(), data["entry_id"], key, data["reason"])
        return dump_points(result), 200 if result.replayed else 201
