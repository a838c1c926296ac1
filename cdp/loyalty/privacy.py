"""PIPL: a person's loyalty data in their export, and erased with them.

Coupons, redemptions and points accounts hang off the profile by foreign key, so the
erasure job finds them itself; the member rows and the partners' change feeds are keyed
by card number, which this hook removes while the identifiers still say whose cards they
are.
"""

from __future__ import annotations

import sqlalchemy as sa

from cdp.db import db
from cdp.loyalty.codes import display
from cdp.models import Identity
from cdp.models.loyalty import (
    Coupon,
    Member,
    MemberChange,
    Partner,
    PointAccount,
    PointEntry,
    Redemption,
)


def _cards(profile_ids: list[int]) -> list[tuple[int, str]]:
    return [
        tuple(row)
        for row in db.session.execute(
            sa.select(Partner.id, Identity.value_index)
            .join(Partner, Partner.code == Identity.namespace)
            .where(Identity.type == "pharmacy_member", Identity.profile_id.in_(profile_ids))
        )
    ]


def export_section(profile_ids: list[int]) -> list[dict]:
    """Memberships, coupons (with redemptions) and points lines of these profiles."""
    rows: list[dict] = []
    for partner_id, card in _cards(profile_ids):
        member = db.session.scalar(
            sa.select(Member).where(Member.partner_id == partner_id, Member.card_no == card)
        )
        rows.append(
            {
                "kind": "membership",
                "partner_id": partner_id,
                "card_no": card,
                "store_code": member.store_code if member else None,
                "joined_at": member.joined_at if member else None,
                "consents": member.consents if member else {},
            }
        )
    for coupon in db.session.scalars(
        sa.select(Coupon).where(Coupon.profile_id.in_(profile_ids)).order_by(Coupon.id)
    ):
        redemptions = db.session.scalars(
            sa.select(Redemption).where(Redemption.coupon_id == coupon.id)
        ).all()
        rows.append(
            {
                "kind": "coupon",
                "campaign_id": coupon.campaign_id,
                "code": display(coupon.code),
                "status": coupon.status,
                "issued_at": coupon.issued_at,
                "expires_at": coupon.expires_at,
                "redemptions": [
                    {
                        "partner_id": r.partner_id,
                        "store_code": r.store_code,
                        "redeemed_at": r.redeemed_at,
                        "voided_at": r.voided_at,
                    }
                    for r in redemptions
                ],  # fmt: skip
            }
        )
    accounts = sa.select(PointAccount.id).where(PointAccount.profile_id.in_(profile_ids))
    for entry in db.session.scalars(
        sa.select(PointEntry).where(PointEntry.account_id.in_(accounts)).order_by(PointEntry.id)
    ):
        rows.append(
            {
                "kind": "points",
                "entry": entry.kind,
                "points": entry.points,
                "balance_after": entry.balance_after,
                "partner_id": entry.partner_id,
                "order_id": entry.order_id,
                "created_at": entry.created_at,
            }
        )
    return rows


def erase(profile_ids: list[int], _event_ids: list[int]) -> int:
    """Delete the member rows and feed entries of the person's cards; returns rows removed."""
    removed = 0
    for partner_id, card in _cards(profile_ids):
        for model in (MemberChange, Member):
            removed += db.session.execute(
                sa.delete(model).where(model.partner_id == partner_id, model.card_no == card)
            ).rowcount
    removed += db.session.execute(
        sa.delete(Member).where(Member.profile_id.in_(profile_ids))
    ).rowcount
    return removed
