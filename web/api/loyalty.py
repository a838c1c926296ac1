"""/api/v1/coupon-campaigns and /api/v1/loyalty: campaigns, issue, stats, points, partners."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from cdp.loyalty import campaigns, coupons, ledger, partners, points, products
from cdp.loyalty.codes import display
from cdp.loyalty.common import live_profile, yuan
from cdp.loyalty.syncs import list_syncs
from cdp.models.loyalty import CAMPAIGN_STATUSES, CAMPAIGN_TYPES, PRODUCT_CLASSES
from web.api.auth import api_requires, authenticate_request
from web.api.partner import iso
from web.session_auth import current_actor

campaigns_bp = Blueprint(
    "coupon_campaigns",
    __name__,
    url_prefix="/api/v1/coupon-campaigns",
    description="Coupon campaigns: create, issue, figures",
)
campaigns_bp.before_request(authenticate_request)
loyalty_bp = Blueprint(
    "loyalty_api",
    __name__,
    url_prefix="/api/v1/loyalty",
    description="Loyalty administration: products, partners, points",
)
loyalty_bp.before_request(authenticate_request)


class CampaignCreateSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    type = fields.String(required=True, validate=validate.OneOf(CAMPAIGN_TYPES))
    value = fields.Raw(
        required=True, metadata={"description": "yuan (amount_off, gift cost) or whole percent"}
    )
    budget = fields.Integer(required=True, strict=True)
    per_profile_limit = fields.Integer(load_default=1, strict=True)
    valid_days = fields.Integer(load_default=None, allow_none=True, strict=True)
    valid_from = fields.AwareDateTime(load_default=None, allow_none=True)
    valid_until = fields.AwareDateTime(load_default=None, allow_none=True)
    status = fields.String(load_default="draft", validate=validate.OneOf(["draft", "active"]))
    audience = fields.String(load_default="patient", validate=validate.OneOf(["patient", "hcp"]))
    products = fields.List(fields.String(), load_default=list)
    partner_ids = fields.List(fields.Integer(strict=True), load_default=list)
    store_codes = fields.List(fields.String(), load_default=list)
    min_spend = fields.Raw(load_default=0, metadata={"description": "yuan"})


class StatusSchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(CAMPAIGN_STATUSES))


class IssueSchema(Schema):
    profile_id = fields.Integer(required=True, strict=True)
    issue_key = fields.String(required=True, validate=validate.Length(min=1, max=128))


class ProductSchema(Schema):
    code = fields.String(required=True)
    name = fields.String(required=True)
    product_class = fields.String(required=True, validate=validate.OneOf(PRODUCT_CLASSES))
    approval_number = fields.String(load_default=None, allow_none=True)


class PartnerCreateSchema(Schema):
    name = fields.String(required=True)
    code = fields.String(load_default=None, allow_none=True)


class RotateSchema(Schema):
    grace_minutes = fields.Integer(load_default=0, strict=True)


class StoreSchema(Schema):
    code = fields.String(required=True)
    name = fields.String(required=True)
    city = fields.String(load_default="")


class AdjustSchema(Schema):
    points = fields.Integer(required=True, strict=True)
    reason = fields.String(required=True)
    idempotency_key = fields.String(required=True)


class PointsActionSchema(Schema):
    action = fields.String(required=True)
    idempotency_key = fields.String(required=True)


class EntryReverseSchema(Schema):
    idempotency_key = fields.String(required=True)
    reason = fields.String(load_default="")


def dump_campaign(campaign, stats: dict | None = None) -> dict:
    return {
        "id": campaign.id,
        "name": campaign.name,
        "type": campaign.type,
        "value": campaign.value if campaign.type == "percent_off" else yuan(campaign.value),
        "min_spend": yuan(campaign.min_spend),
        "audience": campaign.audience,
        "products": campaign.products,
        "partner_ids": campaign.partner_ids,
        "store_codes": campaign.store_codes,
        "valid_from": iso(campaign.valid_from),
        "valid_until": iso(campaign.valid_until),
        "valid_days": campaign.valid_days,
        "budget": campaign.budget,
        "per_profile_limit": campaign.per_profile_limit,
        "issued": campaign.issued_count,
        "status": campaign.status,
        "created_at": iso(campaign.created_at),
        **({"stats": {**stats, "cost": yuan(stats["cost"])}} if stats else {}),
    }


def dump_coupon(coupon, campaign=None) -> dict:
    return {
        "id": coupon.id,
        "code": display(coupon.code),
        "campaign_id": coupon.campaign_id,
        "profile_id": coupon.profile_id,
        "issue_key": coupon.issue_key,
        "status": coupon.status,
        "issued_at": iso(coupon.issued_at),
        "valid_from": iso(coupon.valid_from),
        "expires_at": iso(coupon.expires_at),
        "redeemed_at": iso(coupon.redeemed_at),
        **({"campaign": campaign.name} if campaign is not None else {}),
    }


def dump_entry(entry) -> dict:
    return {
        "id": entry.id,
        "kind": entry.kind,
        "points": entry.points,
        "balance_after": entry.balance_after,
        "rule": entry.rule,
        "reason": entry.reason,
        "partner_id": entry.partner_id,
        "store_code": entry.store_code,
        "order_id": entry.order_id,
        "reverses_id": entry.reverses_id,
        "expires_at": iso(entry.expires_at),
        "created_at": iso(entry.created_at),
    }


def dump_points(result) -> dict:
    return {**dump_entry(result.entry), "balance": result.balance, "replayed": result.replayed}


# --- campaigns --------------------------------------------------------------------------------


@campaigns_bp.route("")
class Campaigns(MethodView):
    @api_requires("loyalty:view")
    def get(self):
        """Campaigns, newest first, with issued/redeemed/rate/cost."""
        found = campaigns.list_campaigns()
        stats = campaigns.campaign_stats([c.id for c in found])
        return {"items": [dump_campaign(c, stats[c.id]) for c in found]}

    @api_requires("loyalty:edit")
    @campaigns_bp.arguments(CampaignCreateSchema)
    def post(self, data):
        """Create a campaign; prescription-drug products are refused (field ``products``)."""
        campaign = campaigns.create_campaign(current_actor(), data)
        return dump_campaign(campaign), 201


@campaigns_bp.route("/<int:campaign_id>")
class Campaign(MethodView):
    @api_requires("loyalty:view")
    def get(self, campaign_id: int):
        """A campaign with its figures, budget burn-down and redemptions by store."""
        campaign = campaigns.get_campaign(campaign_id)
        stats = campaigns.campaign_stats([campaign.id])[campaign.id]
        by_store = campaigns.redemptions_by_store(campaign.id)
        return {
            **dump_campaign(campaign, stats),
            "burn_down": campaigns.burn_down(campaign),
            "by_store": [
                {**r, "cost": yuan(r["cost"]), "sales": yuan(r["sales"])} for r in by_store
            ],
        }


@campaigns_bp.route("/<int:campaign_id>/status")
class CampaignStatus(MethodView):
    @api_requires("loyalty:edit")
    @campaigns_bp.arguments(StatusSchema)
    def post(self, data, campaign_id: int):
        """Activate, pause or end a campaign."""
        return dump_campaign(campaigns.set_status(current_actor(), campaign_id, data["status"]))


@campaigns_bp.route("/<int:campaign_id>/issue")
class Issue(MethodView):
    @api_requires("loyalty:edit")
    @campaigns_bp.arguments(IssueSchema)
    def post(self, data, campaign_id: int):
        """Issue a coupon to a profile; the same issue_key returns the same coupon (200)."""
        coupon, created = coupons.issue_coupon(
            current_actor(), campaign_id, data["profile_id"], data["issue_key"]
        )
        return dump_coupon(coupon), 201 if created else 200


# --- products, partners -----------------------------------------------------------------------


@loyalty_bp.route("/products")
class Products(MethodView):
    @api_requires("loyalty:view")
    def get(self):
        """The product catalogue (code, name, Rx/OTC class)."""
        return {
            "items": [
                {"code": p.code, "name": p.name, "product_class": p.product_class}
                for p in products.list_products()
            ]
        }

    @api_requires("loyalty:edit")
    @loyalty_bp.arguments(ProductSchema)
    def post(self, data):
        """Add a product or change its class."""
        p = products.save_product(current_actor(), **data)
        return {"code": p.code, "name": p.name, "product_class": p.product_class}, 201


def dump_partner(partner) -> dict:
    return {
        "id": partner.id,
        "code": partner.code,
        "name": partner.name,
        "status": partner.status,
        "source_id": partner.source_id,
        "created_at": iso(partner.created_at),
    }


@loyalty_bp.route("/partners")
class Partners(MethodView):
    @api_requires("loyalty:view")
    def get(self):
        """Partner pharmacies."""
        return {"items": [dump_partner(p) for p in partners.list_partners()]}

    @api_requires("loyalty:partners")
    @loyalty_bp.arguments(PartnerCreateSchema)
    def post(self, data):
        """Create a partner; its API key is in the answer, once."""
        partner, key = partners.create_partner(current_actor(), data["name"], data["code"])
        return {**dump_partner(partner), "api_key": key}, 201


@loyalty_bp.route("/partners/<int:partner_id>")
class PartnerView(MethodView):
    @api_requires("loyalty:view")
    def get(self, partner_id: int):
        """A partner with its stores, keys (prefix and dates only) and recent syncs."""
        partner = partners.get_partner(partner_id)
        return {
            **dump_partner(partner),
            "stores": [
                {"code": s.code, "name": s.name, "city": s.city}
                for s in partners.list_stores(partner.id)
            ],
            "keys": [
                {
                    "prefix": k.prefix,
                    "created_at": iso(k.created_at),
                    "revoked_at": iso(k.revoked_at),
                }
                for k in partners.partner_keys(partner.id)
            ],
            "syncs": [
                {
                    "id": s.id,
                    "status": s.status,
                    "total": s.total,
                    "created": s.created,
                    "updated": s.updated,
                    "unchanged": s.unchanged,
                    "rejected": s.rejected,
                    "created_at": iso(s.created_at),
                }
                for s in list_syncs(partner.id)
            ],
        }


@loyalty_bp.route("/partners/<int:partner_id>/rotate-key")
class RotateKey(MethodView):
    @api_requires("loyalty:partners")
    @loyalty_bp.arguments(RotateSchema)
    def post(self, data, partner_id: int):
        """A new key (returned once); old keys stop now or after grace_minutes."""
        partner, key = partners.rotate_key(current_actor(), partner_id, data["grace_minutes"])
        return {"id": partner.id, "api_key": key}


@loyalty_bp.route("/partners/<int:partner_id>/stores")
class Stores(MethodView):
    @api_requires("loyalty:partners")
    @loyalty_bp.arguments(StoreSchema)
    def post(self, data, partner_id: int):
        """Add a store to a partner."""
        store = partners.add_store(current_actor(), partner_id, **data)
        return {"code": store.code, "name": store.name, "city": store.city}, 201


# --- points -----------------------------------------------------------------------------------


@loyalty_bp.route("/points/<int:profile_id>")
class ProfilePoints(MethodView):
    @api_requires("loyalty:view")
    def get(self, profile_id: int):
        """A profile's balance and ledger lines (newest first)."""
        profile = live_profile(profile_id)
        return {
            "profile_id": profile.id,
            "balance": ledger.balance(profile.id),
            "entries": [dump_entry(e) for e in ledger.history(profile.id, limit=100)],
        }


@loyalty_bp.route("/points/<int:profile_id>/adjust")
class Adjust(MethodView):
    @api_requires("loyalty:points")
    @loyalty_bp.arguments(AdjustSchema)
    def post(self, data, profile_id: int):
        """A manual correction with a reason (never below zero; doctors within the cap)."""
        result = points.adjust(
            current_actor(), profile_id, data["points"], data["reason"], data["idempotency_key"]
        )
        return dump_points(result), 200 if result.replayed else 201


@loyalty_bp.route("/points/<int:profile_id>/earn")
class EarnAction(MethodView):
    @api_requires("loyalty:points")
    @loyalty_bp.arguments(PointsActionSchema)
    def post(self, data, profile_id: int):
        """Points for a completed action (e.g. quiz_completed); doctors within the annual cap."""
        result = points.earn_action(
            current_actor(), profile_id, data["action"], data["idempotency_key"]
        )
        return dump_points(result), 200 if result.replayed else 201


@loyalty_bp.route("/points/entries/<int:entry_id>/reverse")
class ReverseEntry(MethodView):
    @api_requires("loyalty:points")
    @loyalty_bp.arguments(EntryReverseSchema)
    def post(self, data, entry_id: int):
        """Reverse an earn or a burn."""
        result = points.reverse(current_actor(), entry_id, data["idempotency_key"], data["reason"])
        return dump_points(result), 200 if result.replayed else 201


@loyalty_bp.route("/points/reconciliation")
class Reconciliation(MethodView):
    @api_requires("loyalty:view")
    def get(self):
        """Balances checked against ledger and lots; totals by kind and partner."""
        report = ledger.reconciliation()
        return {**report, "checked_at": iso(report["checked_at"])}


@loyalty_bp.route("/profiles/<int:profile_id>/coupons")
class ProfileCoupons(MethodView):
    @api_requires("loyalty:view")
    def get(self, profile_id: int):
        """A profile's coupons of every status."""
        profile = live_profile(profile_id)
        return {"items": [dump_coupon(c, k) for c, k in coupons.profile_coupons(profile.id)]}
