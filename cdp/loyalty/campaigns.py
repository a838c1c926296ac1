"""Coupon campaigns: creation with the drug-law rules, status changes, and their figures.

Rules checked at creation (each refusal names the field):
* every product code must be in the catalogue (an unknown code could be a prescription drug);
* no prescription (Rx) product for patients (Drug Administration Law, online drug sales
  measures: no promotions of Rx drugs to the public), nor for doctors (anti-bribery: no
  benefit tied to prescribing);
* no gift ("buy X, get a drug") of a 甲类 OTC drug.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa

from cdp import audit
from cdp.actors import Actor
from cdp.auth.permissions import require
from cdp.db import db, transaction, utcnow
from cdp.exceptions import Conflict, NotFound, ValidationFailed
from cdp.loyalty.common import to_fen
from cdp.loyalty.products import classify, describe
from cdp.models.loyalty import (
    CAMPAIGN_AUDIENCES,
    CAMPAIGN_TYPES,
    Coupon,
    CouponCampaign,
    Partner,
    Redemption,
    Store,
)

MAX_BUDGET = 10_000_000
# status -> statuses it may move to; "ended" is final.
TRANSITIONS = {
    "draft": ("active", "ended"),
    "active": ("paused", "ended"),
    "paused": ("active", "ended"),
    "ended": (),
}


def _int(data: dict, field: str, low: int, high: int, default=None) -> int | None:
    value = data.get(field, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationFailed(f"{field} must be a whole number from {low} to {high}", field)
    return value


def _value(kind: str, raw) -> int:
    if kind == "percent_off":
        if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= 99:
            raise ValidationFailed("value: percent_off takes a whole percent from 1 to 99", "value")
        return raw
    return to_fen(raw, "value", allow_zero=kind == "gift")


def _check_products(codes: list, audience: str, kind: str) -> list[str]:
    if not isinstance(codes, list) or not all(isinstance(c, str) and c for c in codes):
        raise ValidationFailed("products must be a list of product codes", "products")
    codes = list(dict.fromkeys(c.strip() for c in codes))
    known = classify(codes)
    for code in codes:
        product = known.get(code)
        if product is None:
            raise ValidationFailed(
                f"products: '{code}' is not in the product catalogue; add it with its Rx/OTC "
                "class first",
                "products",
            )
        if product.product_class == "rx" and audience == "patient":
            raise ValidationFailed(
                f"products: {describe(product)}; coupons may not be tied to prescription drugs "
                "for patients (drug-advertising and online drug sales rules)",
                "products",
            )
        if product.product_class == "rx":
            raise ValidationFailed(
                f"products: {describe(product)}; coupons tied to prescription drugs are not "
                "allowed for doctors either (anti-bribery rules)",
                "products",
            )
        if product.product_class == "otc_a" and kind == "gift":
            raise ValidationFailed(
                f"products: {describe(product)}; 甲类 OTC drugs may not be given away as gifts",
                "products",
            )
    return codes


def _check_places(partner_ids, store_codes) -> tuple[list[int], list[str]]:
    partner_ids = partner_ids or []
    store_codes = store_codes or []
    if not isinstance(partner_ids, list) or not all(
        isinstance(p, int) and not isinstance(p, bool) for p in partner_ids
    ):
        raise ValidationFailed("partner_ids must be a list of partner ids", "partner_ids")
    if not isinstance(store_codes, list) or not all(isinstance(s, str) for s in store_codes):
        raise ValidationFailed("store_codes must be a list of store codes", "store_codes")
    partner_ids = sorted(set(partner_ids))
    found = set(db.session.scalars(sa.select(Partner.id).where(Partner.id.in_(partner_ids))))
    if missing := [p for p in partner_ids if p not in found]:
        raise ValidationFailed(f"partner_ids: no partner {missing[0]}", "partner_ids")
    store_codes = sorted(set(store_codes))
    if store_codes:
        query = sa.select(Store.code).where(Store.code.in_(store_codes))
        if partner_ids:
            query = query.where(Store.partner_id.in_(partner_ids))
        known = set(db.session.scalars(query))
        if missing := [s for s in store_codes if s not in known]:
            raise ValidationFailed(
                f"store_codes: '{missing[0]}' is not a store of the campaign's partners",
                "store_codes",
            )
    return partner_ids, store_codes


def _window(data: dict) -> tuple[datetime | None, datetime | None, int | None]:
    valid_from, valid_until = data.get("valid_from"), data.get("valid_until")
    for field, value in (("valid_from", valid_from), ("valid_until", valid_until)):
        if value is not None and (not isinstance(value, datetime) or value.tzinfo is None):
            raise ValidationFailed(f"{field} must be a date-time with a time zone", field)
    valid_days = _int(data, "valid_days", 1, 3650)
    if valid_days is None and valid_until is None:
        raise ValidationFailed("give valid_days (days after issue) or valid_until", "valid_days")
    if valid_from and valid_until and valid_until <= valid_from:
        raise ValidationFailed("valid_until must be after valid_from", "valid_until")
    if valid_until and valid_until <= utcnow():
        raise ValidationFailed("valid_until is in the past", "valid_until")
    return valid_from, valid_until, valid_days


def create_campaign(actor: Actor, data: dict) -> CouponCampaign:
    """Create a campaign (draft, or active with ``"status": "active"``)."""
    require(actor, "loyalty:edit")
    name = (data.get("name") or "").strip()
    if not name or len(name) > 200:
        raise ValidationFailed("name is required (at most 200 characters)", "name")
    kind = data.get("type")
    if kind not in CAMPAIGN_TYPES:
        raise ValidationFailed(f"type must be one of {', '.join(CAMPAIGN_TYPES)}", "type")
    audience = data.get("audience") or "patient"
    if audience not in CAMPAIGN_AUDIENCES:
        raise ValidationFailed("audience must be patient or hcp", "audience")
    status = data.get("status") or "draft"
    if status not in ("draft", "active"):
        raise ValidationFailed("a new campaign is draft or active", "status")
    value = _value(kind, data.get("value"))
    min_spend = to_fen(data.get("min_spend") or 0, "min_spend", allow_zero=True)
    budget = _int(data, "budget", 1, MAX_BUDGET)
    if budget is None:
        raise ValidationFailed("budget (how many coupons may be issued) is required", "budget")
    per_profile_limit = _int(data, "per_profile_limit", 1, 100, default=1)
    products = _check_products(data.get("products") or [], audience, kind)
    partner_ids, store_codes = _check_places(data.get("partner_ids"), data.get("store_codes"))
    valid_from, valid_until, valid_days = _window(data)
    with transaction() as session:
        campaign = CouponCampaign(
            name=name,
            type=kind,
            value=value,
            min_spend=min_spend,
            audience=audience,
            products=products,
            partner_ids=partner_ids,
            store_codes=store_codes,
            valid_from=valid_from,
            valid_until=valid_until,
            valid_days=valid_days,
            budget=budget,
            per_profile_limit=per_profile_limit,
            status=status,
            created_by_id=actor.user_id,
        )
        session.add(campaign)
        session.flush()
        audit.record(
            actor, "campaign.create", "coupon_campaign", campaign.id, budget=budget, status=status
        )
    return campaign


def set_status(actor: Actor, campaign_id: int, status: str) -> CouponCampaign:
    """Move a campaign along draft → active ⇄ paused → ended."""
    require(actor, "loyalty:edit")
    with transaction():
        campaign = get_campaign(campaign_id)
        if status not in TRANSITIONS.get(campaign.status, ()):
            raise Conflict(f"a {campaign.status} campaign cannot become {status}", "status")
        before, campaign.status, campaign.updated_at = campaign.status, status, utcnow()
        audit.record(
            actor, "campaign.status", "coupon_campaign", campaign.id, before=before, after=status
        )
    return campaign


def get_campaign(campaign_id: int) -> CouponCampaign:
    campaign = db.session.get(CouponCampaign, campaign_id)
    if campaign is None:
        raise NotFound("no such campaign", "campaign_id")
    return campaign


def list_campaigns(status: str | None = None) -> list[CouponCampaign]:
    query = sa.select(CouponCampaign).order_by(CouponCampaign.id.desc())
    if status:
        query = query.where(CouponCampaign.status == status)
    return list(db.session.scalars(query))


def eligible_at(campaign: CouponCampaign, partner_id: int) -> bool:
    return not campaign.partner_ids or partner_id in campaign.partner_ids


def coupon_window(campaign: CouponCampaign, issued_at: datetime) -> tuple:
    """(valid from, expires at) of a coupon issued now."""
    ends = [campaign.valid_until] if campaign.valid_until else []
    if campaign.valid_days:
        ends.append(issued_at + timedelta(days=campaign.valid_days))
    return campaign.valid_from, min(ends) if ends else None


# --- figures ----------------------------------------------------------------------------------


def campaign_stats(campaign_ids: list[int]) -> dict[int, dict]:
    """Issued, redeemed, expired, voided, redemption rate and cost (fen) per campaign."""
    stats = {
        cid: {"issued": 0, "redeemed": 0, "expired": 0, "voided": 0, "cost": 0, "rate": 0.0}
        for cid in campaign_ids
    }
    if not campaign_ids:
        return stats
    for cid, status, count in db.session.execute(
        sa.select(Coupon.campaign_id, Coupon.status, sa.func.count())
        .where(Coupon.campaign_id.in_(campaign_ids))
        .group_by(Coupon.campaign_id, Coupon.status)
    ):
        stats[cid]["issued"] += count
        if status in ("redeemed", "expired"):
            stats[cid][status] = count
    voided = sa.case((Redemption.voided_at.is_not(None), 1), else_=0)
    live_cost = sa.case((Redemption.voided_at.is_(None), Redemption.discount), else_=0)
    for cid, void_count, cost in db.session.execute(
        sa.select(Redemption.campaign_id, sa.func.sum(voided), sa.func.sum(live_cost))
        .where(Redemption.campaign_id.in_(campaign_ids))
        .group_by(Redemption.campaign_id)
    ):
        stats[cid]["voided"] = int(void_count or 0)
        stats[cid]["cost"] = int(cost or 0)
    for figures in stats.values():
        if figures["issued"]:
            figures["rate"] = round(figures["redeemed"] / figures["issued"], 4)
    return stats


def burn_down(campaign: CouponCampaign, utc_offset_hours: int = 8) -> list[dict]:
    """Per local day: coupons issued that day, issued so far, and budget left."""
    shifted = Coupon.issued_at + timedelta(hours=utc_offset_hours)
    if db.session.get_bind().dialect.name == "sqlite":
        day = sa.func.date(Coupon.issued_at, f"+{utc_offset_hours} hours")
    else:
        day = sa.cast(shifted, sa.Date)
    rows = db.session.execute(
        sa.select(day.label("day"), sa.func.count())
        .where(Coupon.campaign_id == campaign.id)
        .group_by(day)
        .order_by(day)
    )
    series, total = [], 0
    for value, count in rows:
        total += count
        series.append(
            {"day": str(value), "issued": count, "total": total, "left": campaign.budget - total}
        )
    return series


def redemptions_by_store(campaign_id: int) -> list[dict]:
    """Redemptions (not voided) and their cost per partner and store, most first."""
    rows = db.session.execute(
        sa.select(
            Redemption.partner_id,
            Partner.name,
            Redemption.store_code,
            sa.func.count(),
            sa.func.sum(Redemption.discount),
            sa.func.sum(Redemption.amount),
        )
        .join(Partner, Partner.id == Redemption.partner_id)
        .where(Redemption.campaign_id == campaign_id, Redemption.voided_at.is_(None))
        .group_by(Redemption.partner_id, Partner.name, Redemption.store_code)
        .order_by(sa.func.count().desc(), Redemption.store_code)
    )
    return [
        {
            "partner_id": pid,
            "partner": name,
            "store_code": store,
            "redeemed": count,
            "cost": int(cost or 0),
            "sales": int(sales or 0),
        }
        for pid, name, store, count, cost, sales in rows
    ]
