"""Redemptions settle in batches: one event, one feed change and an audited digest each."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from cdp.db import db
from cdp.loyalty import tasks
from cdp.loyalty.settle import settle_redemptions, verify_redemptions
from cdp.models import AuditEntry, Event
from cdp.models.loyalty import Redemption
from tests.test_loyalty_support import setup_loyalty


@pytest.fixture
def loyalty(app):
    return setup_loyalty(app)


def redeem(loyalty, code: str, order: str):
    return loyalty.client.post(
        f"/api/v1/partner/coupons/{code}/redeem",
        json={"store_code": loyalty.a.store, "order_id": order, "amount": 30},
        headers=loyalty.a.headers,
    )


def changes(loyalty) -> list[str]:
    response = loyalty.client.get("/api/v1/partner/members/changes", headers=loyalty.a.headers)
    return [item["type"] for item in response.get_json()["items"]]


def test_each_redemption_settles_once_with_its_event_change_and_audit(loyalty):
    campaign = loyalty.campaign(budget=10)
    profiles = [loyalty.member(loyalty.a, f"S-{n}", f"1390000000{n}") for n in range(3)]
    codes = [loyalty.coupon(campaign, p, f"k{n}") for n, p in enumerate(profiles)]
    assert all(redeem(loyalty, c, f"O-{n}").status_code == 201 for n, c in enumerate(codes))
    assert redeem(loyalty, codes[0], "O-again").status_code == 409
    assert "coupon_redeemed" not in changes(loyalty)  # not settled yet

    with loyalty.app.app_context():
        assert tasks.hand_off_events() >= 1  # the periodic job settles, then hands off
        assert settle_redemptions() == 0  # nothing twice
        redeemed = db.session.scalars(
            sa.select(Event.profile_id).where(Event.name == "coupon_redeemed")
        ).all()
        assert sorted(redeemed) == sorted(profiles)
        batch = db.session.scalars(
            sa.select(AuditEntry).where(AuditEntry.action == "coupon.redeem")
        ).one()
        assert batch.details["count"] == 3 and batch.request_id == "loyalty-redemptions"
        assert verify_redemptions() == []
    assert changes(loyalty).count("coupon_redeemed") == 3

    with loyalty.app.app_context():  # a redemption edited afterwards breaks its digest
        row = db.session.scalars(sa.select(Redemption).order_by(Redemption.id)).first()
        row.discount += 100
        db.session.commit()
        assert verify_redemptions() == [batch.id]
