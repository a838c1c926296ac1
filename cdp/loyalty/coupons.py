"""Coupons: issue (idempotent, within budget and per-profile limit), codes, what partners see.

Redeeming, voiding and expiry are in ``cdp.loyalty.redemptions``.

What a partner may see: coupons of campaigns open to that partner, held by profiles that
carry that partner's member card, plus coupons it redeemed itself. Anything else is "not
found", so codes, members and redemptions of other partners cannot be probed.
"""

from __future__ import annotations

from typing import NamedTuple

import sqlalchemy as sa

from cdp import audit
from cdp.actors import Actor
from cdp.auth.permissions import require
from cdp.db import db, transaction, utcnow
from cdp.exceptions import Conflict, NotFound, ValidationFailed
from cdp.loyalty import codes
from cdp.loyalty.campaigns import coupon_window, eligible_at
from cdp.loyalty.common import (
    begin_write,
    emit_events,
    hand_off,
    live_profile,
    record_change,
)
from cdp.loyalty.partners import PartnerActor
from cdp.models import Identity
from cdp.models.loyalty import Coupon, CouponCampaign, Partner, Redemption, Store
from cdp.profiles import profile_family


def coupon_event(coupon: Coupon, campaign: CouponCampaign, name: str, suffix: str, **extra):
    return {
        "profile_id": coupon.profile_id,
        "name": name,
        "message_id": f"{name}:{coupon.id}:{suffix}",
        "properties": {
            "coupon_id": coupon.id,
            "campaign_id": campaign.id,
            "campaign": campaign.name,
            "coupon_type": campaign.type,
            "value": campaign.value,
            **extra,
        },
    }


def issue_coupon(
    actor: Actor, campaign_id: int, profile_id: int, issue_key: str
) -> tuple[Coupon, bool]:
    """Issue one coupon to a profile; the same ``issue_key`` returns the same coupon.

    Returns (coupon, created). Budget and per-profile limit hold under concurrency: the
    campaign row is locked (or the SQLite write lock taken) before either is checked.
    """
    require(actor, "loyalty:edit")
    issue_key = (issue_key or "").strip()
    if not issue_key or len(issue_key) > 128:
        raise ValidationFailed("issue_key is required (at most 128 characters)", "issue_key")
    with transaction() as session:
        begin_write(session)
        campaign = session.scalars(
            sa.select(CouponCampaign)
            .where(CouponCampaign.id == campaign_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).first()
        if campaign is None:
            raise NotFound("no such campaign", "campaign_id")
        existing = session.scalar(
            sa.select(Coupon).where(
                Coupon.campaign_id == campaign.id, Coupon.issue_key == issue_key
            )
        )
        if existing is not None:
            if existing.profile_id not in profile_family(live_profile(profile_id).id):
                raise Conflict("issue_key was already used for another profile", "issue_key")
            return existing, False
        now = utcnow()
        if campaign.status != "active":
            raise Conflict(f"the campaign is {campaign.status}, not active", "status")
        if campaign.valid_until is not None and campaign.valid_until <= now:
            raise Conflict("the campaign's validity has ended", "valid_until")
        profile = live_profile(profile_id)
        if profile.kind != campaign.audience:
            raise Conflict(
                f"the campaign is for {campaign.audience} profiles; profile {profile.id} is "
                f"a {profile.kind}",
                "profile_id",
            )
        held = session.scalar(
            sa.select(sa.func.count())
            .select_from(Coupon)
            .where(Coupon.campaign_id == campaign.id)
            .where(Coupon.profile_id.in_(profile_family(profile.id)))
        )
        if held >= campaign.per_profile_limit:
            raise Conflict(
                f"per_profile_limit reached: the profile holds {held} coupon(s) of this campaign",
                "per_profile_limit",
            )
        counted = session.execute(
            sa.update(CouponCampaign)
            .where(CouponCampaign.id == campaign.id)
            .where(CouponCampaign.issued_count < CouponCampaign.budget)
            .values(issued_count=CouponCampaign.issued_count + 1)
            .execution_options(synchronize_session=False)
        )
        if counted.rowcount != 1:
            raise Conflict(
                f"budget exhausted: all {campaign.budget} coupons have been issued", "budget"
            )
        valid_from, expires_at = coupon_window(campaign, now)
        coupon = Coupon(
            campaign_id=campaign.id,
            profile_id=profile.id,
            code=codes.new_code(),
            issue_key=issue_key,
            issued_at=now,
            valid_from=valid_from,
            expires_at=expires_at,
        )
        session.add(coupon)
        session.flush()
        outbox = emit_events(
            [coupon_event(coupon, campaign, "coupon_issued", "0", expires_at=_iso(expires_at))]
        )
        record_change(
            profile.id,
            "coupon_issued",
            {"coupon_id": coupon.id, "campaign_id": campaign.id, "expires_at": _iso(expires_at)},
            campaign.partner_ids or None,
        )
        audit.record(
            actor, "coupon.issue", "coupon", coupon.id, campaign_id=campaign.id, profile=profile.id
        )
    hand_off(outbox)
    return coupon, True


def _iso(value) -> str | None:
    return value.isoformat() if value is not None else None


def parse_code(text: str) -> str:
    """A normalised code, or 422 when it cannot be one of ours (a typo: the check fails)."""
    code = codes.normalise(text or "")
    if not codes.is_valid(code):
        raise ValidationFailed(
            "code: not a valid coupon code (13 characters whose last one checks the others); "
            "check it for typos",
            "code",
        )
    return code


def _member_of(partner_id: int, profile_id):
    """EXISTS: the profile holds a card of this partner."""
    return (
        sa.select(Identity.id)
        .join(Partner, Partner.code == Identity.namespace)
        .where(
            Identity.type == "pharmacy_member",
            Identity.profile_id == profile_id,
            Partner.id == partner_id,
        )
        .exists()
    )


def _redeemed_by(partner_id: int, coupon_id):
    return (
        sa.select(Redemption.id)
        .where(Redemption.coupon_id == coupon_id, Redemption.partner_id == partner_id)
        .exists()
    )


# The till's lookup, built once: constructing this statement and its cache key cost more
# than running it (about half of a redemption's CPU).
_PARTNER = sa.bindparam("b_partner")
_FOR_PARTNER = (
    sa.select(
        Coupon,
        CouponCampaign,
        sa.select(Store.id)
        .where(Store.partner_id == _PARTNER, Store.code == sa.bindparam("b_store"))
        .exists(),
        _member_of(_PARTNER, Coupon.profile_id),
        _redeemed_by(_PARTNER, Coupon.id),
        # The order of this partner's live redemption: what a 409 for a retry names.
        sa.select(Redemption.order_id)
        .where(
            Redemption.coupon_id == Coupon.id,
            Redemption.partner_id == _PARTNER,
            Redemption.voided_at.is_(None),
        )
        .limit(1)
        .scalar_subquery(),
    )
    .join(CouponCampaign, CouponCampaign.id == Coupon.campaign_id)
    .where(Coupon.code == sa.bindparam("b_code"))
)


class PartnerCoupon(NamedTuple):
    coupon: Coupon
    campaign: CouponCampaign
    store_known: bool
    live_order_id: str | None  # this partner's live redemption of it, if any


def load_for_partner(
    actor: PartnerActor, code: str, store_code: str | None = None
) -> PartnerCoupon:
    """The coupon, its campaign and what the till needs, in one query; 404 unless the
    partner may see it.

    The tenant rule: the partner's own member's coupon of a campaign open to the partner,
    or a coupon it redeemed itself.
    """
    params = {"b_partner": actor.partner_id, "b_store": store_code or "", "b_code": code}
    row = db.session.execute(_FOR_PARTNER, params).first()
    if row is None:
        raise NotFound("no such coupon", "code")
    coupon, campaign, store_ok, member, redeemed_here, live_order_id = row
    if not ((member and eligible_at(campaign, actor.partner_id)) or redeemed_here):
        raise NotFound("no such coupon", "code")
    return PartnerCoupon(coupon, campaign, store_ok, live_order_id)


def partner_coupon(actor: PartnerActor, code_text: str) -> tuple[Coupon, CouponCampaign]:
    require(actor, "partner:api")
    coupon, campaign, _, _ = load_for_partner(actor, parse_code(code_text))
    return coupon, campaign


def usable_coupons(actor: PartnerActor, profile_id: int) -> list[tuple[Coupon, CouponCampaign]]:
    """Coupons a member can use at this partner now (the till's lookup)."""
    require(actor, "partner:api")
    now = utcnow()
    rows = db.session.execute(
        sa.select(Coupon, CouponCampaign)
        .join(CouponCampaign, CouponCampaign.id == Coupon.campaign_id)
        .where(Coupon.profile_id.in_(profile_family(profile_id)))
        .where(Coupon.status == "issued", CouponCampaign.status != "ended")
        .where(sa.or_(Coupon.expires_at.is_(None), Coupon.expires_at > now))
        .where(sa.or_(Coupon.valid_from.is_(None), Coupon.valid_from <= now))
        .order_by(Coupon.expires_at, Coupon.id)
    ).all()
    return [(c, k) for c, k in rows if eligible_at(k, actor.partner_id)]


def profile_coupons(profile_id: int, limit: int = 100) -> list[tuple[Coupon, CouponCampaign]]:
    """A profile's coupons of every status, newest first (for the profile page)."""
    return list(
        db.session.execute(
            sa.select(Coupon, CouponCampaign)
            .join(CouponCampaign, CouponCampaign.id == Coupon.campaign_id)
            .where(Coupon.profile_id.in_(profile_family(profile_id)))
            .order_by(Coupon.id.desc())
            .limit(limit)
        ).tuples()
    )
