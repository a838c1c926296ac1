"""Redemptions at the till: redeem exactly once, void within the window, and coupon expiry.

Exactly-once redemption is a guarded ``UPDATE … SET status='redeemed' WHERE id = :id AND
status = 'issued'``: whichever transaction's update matches the row wins, every other one
sees zero rows and answers 409, on SQLite and PostgreSQL alike. The winner writes only the
redemption row; its event, feed change and audit record follow in batches
(``cdp.loyalty.settle``).
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from cdp import audit
from cdp.actors import Actor
from cdp.auth.permissions import require
from cdp.db import db, transaction, utcnow
from cdp.exceptions import Conflict, NotFound, ValidationFailed
from cdp.loyalty.common import (
    begin_write,
    emit_events,
    hand_off,
    record_change,
    setting,
)
from cdp.loyalty.coupons import coupon_event, load_for_partner, parse_code
from cdp.loyalty.partners import PartnerActor, require_store
from cdp.loyalty.settle import settle_redemptions
from cdp.models.loyalty import Coupon, CouponCampaign, Redemption


def _discount(campaign: CouponCampaign, amount: int) -> int:
    if campaign.type == "percent_off":
        return amount * campaign.value // 100
    if campaign.type == "amount_off":
        return min(campaign.value, amount) if amount else campaign.value
    return campaign.value  # gift: the gift's cost


def _check_usable(coupon, campaign, now, amount: int, product_codes) -> None:
    if campaign.status == "ended":
        raise Conflict("the campaign has ended: its coupons can no longer be used", "code")
    if coupon.expires_at is not None and coupon.expires_at <= now:
        raise Conflict("coupon has expired", "code")
    if coupon.valid_from is not None and coupon.valid_from > now:
        raise Conflict("coupon is not valid yet", "code")
    if amount < campaign.min_spend:
        raise ValidationFailed("amount is below the coupon's minimum spend", "amount")
    if campaign.products and not set(product_codes or ()) & set(campaign.products):
        raise ValidationFailed(
            "product_codes: the order has none of the coupon's products", "product_codes"
        )


_LOOKUP = object()  # "not read yet": ask the database


def _why_not_redeemable(
    coupon: Coupon, campaign: CouponCampaign, partner_id: int, mine=_LOOKUP
) -> Conflict:
    """The 409; ``mine``: this partner's live order for the coupon, when already read."""
    if coupon.status == "redeemed":
        if mine is _LOOKUP:
            mine = db.session.scalar(
                sa.select(Redemption.order_id).where(
                    Redemption.coupon_id == coupon.id,
                    Redemption.partner_id == partner_id,
                    Redemption.voided_at.is_(None),
                )
            )
        where = f" by your order '{mine}'" if mine else ""
        return Conflict(f"coupon already redeemed{where}", "code")
    if coupon.status == "expired":
        return Conflict("coupon has expired", "code")
    return Conflict(f"coupon cannot be redeemed (campaign {campaign.status})", "code")


# Built once (see coupons._FOR_PARTNER). The guarded UPDATE decides who wins a race.
_COUPONS = Coupon.__table__
_CLAIM = (
    sa.update(_COUPONS)
    .where(_COUPONS.c.id == sa.bindparam("b_id"), _COUPONS.c.status == "issued")
    .values(status="redeemed", redeemed_at=sa.bindparam("b_now"))
)
_INSERT_REDEMPTION = sa.insert(Redemption.__table__).returning(Redemption.__table__.c.id)


def redeem(
    actor: PartnerActor,
    code_text: str,
    store_code: str,
    order_id: str,
    amount: int,
    product_codes: list[str] | None = None,
) -> tuple[Redemption, str]:
    """Redeem a coupon at one of the partner's stores, exactly once (409 for every retry)."""
    require(actor, "partner:api")
    code = parse_code(code_text)
    order_id = (order_id or "").strip()
    if not order_id or len(order_id) > 64:
        raise ValidationFailed("order_id is required (at most 64 characters)", "order_id")
    # Validation reads first, outside the write lock; the guarded UPDATE decides who wins.
    coupon, campaign, store_ok, live_order_id = load_for_partner(actor, code, store_code)
    if not store_ok:
        require_store(actor.partner_id, store_code)  # raises the 422 naming the field
    if campaign.store_codes and store_code not in campaign.store_codes:
        raise ValidationFailed("the coupon is not valid at this store", "store_code")
    now = utcnow()
    if coupon.status != "issued":
        # Already used or expired when read (a committed state): no need for the write lock.
        raise _why_not_redeemable(coupon, campaign, actor.partner_id, live_order_id)
    _check_usable(coupon, campaign, now, amount, product_codes)
    with transaction() as session:
        begin_write(session)
        connection = session.connection()
        won = connection.execute(_CLAIM, {"b_id": coupon.id, "b_now": now}).rowcount
        if won != 1:
            session.refresh(coupon)
            raise _why_not_redeemable(coupon, campaign, actor.partner_id)
        discount = _discount(campaign, amount)
        redemption_id = connection.execute(
            _INSERT_REDEMPTION,
            dict(
                coupon_id=coupon.id, campaign_id=campaign.id, partner_id=actor.partner_id,
                store_code=store_code, order_id=order_id, amount=amount, discount=discount,
                redeemed_at=now, void_reason="",
            ),
        ).scalar_one()  # fmt: skip
        coupon_id, campaign_id = coupon.id, campaign.id
    # The event, the partners' change and the audit row follow in batches (cdp.loyalty.settle).
    # Built from what was written, so the answer needs no second round trip.
    redemption = Redemption(
        id=redemption_id, coupon_id=coupon_id, campaign_id=campaign_id,
        partner_id=actor.partner_id, store_code=store_code, order_id=order_id,
        amount=amount, discount=discount, redeemed_at=now, voided_at=None,
    )  # fmt: skip
    hand_off(redemption_id)
    return redemption, code


def void_window() -> timedelta:
    return timedelta(minutes=setting("LOYALTY_VOID_WINDOW_MINUTES"))


def void_redemption(
    actor: PartnerActor, redemption_id: int, reason: str = ""
) -> tuple[Redemption, Coupon]:
    """Undo one of this partner's redemptions within the window; the coupon is usable again."""
    require(actor, "partner:api")
    settle_redemptions()  # the redemption's own event and change come before the void's
    with transaction() as session:
        begin_write(session)
        redemption = session.get(Redemption, redemption_id)
        if redemption is None or redemption.partner_id != actor.partner_id:
            raise NotFound("no such redemption", "redemption_id")
        if redemption.voided_at is not None:
            raise Conflict("the redemption is already void", "redemption_id")
        now = utcnow()
        if now - redemption.redeemed_at > void_window():
            minutes = int(void_window().total_seconds() // 60)
            raise Conflict(f"too late to void: the window is {minutes} minutes", "redemption_id")
        done = session.execute(
            sa.update(Redemption)
            .where(Redemption.id == redemption.id, Redemption.voided_at.is_(None))
            .values(voided_at=now, void_reason=(reason or "")[:200])
            .execution_options(synchronize_session=False)
        ).rowcount
        if done != 1:
            raise Conflict("the redemption is already void", "redemption_id")
        coupon = session.get(Coupon, redemption.coupon_id)
        expired = coupon.expires_at is not None and coupon.expires_at <= now
        coupon.status = "expired" if expired else "issued"
        coupon.redeemed_at = None
        campaign = session.get(CouponCampaign, coupon.campaign_id)
        outbox = emit_events(
            [coupon_event(coupon, campaign, "coupon_redemption_voided", str(redemption.id))]
        )
        record_change(coupon.profile_id, "coupon_voided", {"coupon_id": coupon.id}, None)
        audit.record(actor, "coupon.void", "coupon", coupon.id, redemption=redemption.id)
    hand_off(outbox)
    return redemption, coupon


def partner_redemptions(actor: PartnerActor, after_id: int = 0, limit: int = 100) -> list:
    require(actor, "partner:api")
    return list(
        db.session.execute(
            sa.select(Redemption, Coupon.code)
            .join(Coupon, Coupon.id == Redemption.coupon_id)
            .where(Redemption.partner_id == actor.partner_id, Redemption.id > after_id)
            .order_by(Redemption.id)
            .limit(limit)
        ).tuples()
    )


def expire_coupons(actor: Actor, batch: int = 500) -> int:
    """Mark issued coupons past their expiry as expired (with events); returns how many."""
    total = 0
    while True:
        with transaction() as session:
            begin_write(session)
            now = utcnow()
            ids = list(
                session.scalars(
                    sa.select(Coupon.id)
                    .where(Coupon.status == "issued", Coupon.expires_at <= now)
                    .order_by(Coupon.id)
                    .limit(batch)
                )
            )
            if not ids:
                return total
            session.execute(
                sa.update(Coupon)
                .where(Coupon.id.in_(ids), Coupon.status == "issued")
                .values(status="expired")
                .execution_options(synchronize_session=False)
            )
            rows = session.execute(
                sa.select(Coupon, CouponCampaign)
                .join(CouponCampaign, CouponCampaign.id == Coupon.campaign_id)
                .where(Coupon.id.in_(ids))
                .execution_options(populate_existing=True)
            ).tuples()
            events = []
            for coupon, campaign in rows:
                events.append(coupon_event(coupon, campaign, "coupon_expired", "0"))
                record_change(coupon.profile_id, "coupon_expired", {"coupon_id": coupon.id})
            outbox = emit_events(events)
            audit.record(actor, "coupon.expire", "coupon", None, count=len(ids))
        hand_off(outbox)
        total += len(ids)
