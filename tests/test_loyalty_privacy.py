"""PIPL: a member's loyalty data is in their export and goes with their erasure."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from cdp.actors import SYSTEM
from cdp.db import db
from cdp.loyalty import ledger
from cdp.models.loyalty import Coupon, Member, MemberChange, PointAccount, PointEntry, Redemption
from cdp.privacy.erasure import request_erasure, run_erasure
from cdp.privacy.export import EXPORT_SECTIONS
from tests.test_loyalty_support import setup_loyalty


@pytest.fixture
def loyalty(app):
    return setup_loyalty(app)


def _member_with_everything(loyalty) -> int:
    profile_id = loyalty.member(loyalty.a, "Z-1", "13000000001", consents={"sms": True})
    code = loyalty.coupon(loyalty.campaign(), profile_id)
    h = loyalty.a.headers
    loyalty.client.post(
        f"/api/v1/partner/coupons/{code}/redeem",
        json={"store_code": "LBX-CS-001", "order_id": "O-1"},
        headers=h,
    )
    loyalty.client.post(
        "/api/v1/partner/points/earn",
        json={"member": "Z-1", "order_id": "O-1", "store_code": "LBX-CS-001",
              "items": [{"product_code": "D017", "amount": 40}]},
        headers=h,
    )  # fmt: skip
    loyalty.client.post(
        "/api/v1/partner/points/burn",
        json={"member": "Z-1", "order_id": "O-2", "store_code": "LBX-CS-001", "points": 5},
        headers=h,
    )
    return profile_id


def test_export_has_memberships_coupons_and_points(loyalty):
    profile_id = _member_with_everything(loyalty)
    with loyalty.app.app_context():
        rows = EXPORT_SECTIONS["loyalty"]([profile_id])
    kinds = [r["kind"] for r in rows]
    assert kinds == ["membership", "coupon", "points", "points"]
    assert rows[0]["card_no"] == "Z-1" and rows[1]["redemptions"][0]["store_code"] == "LBX-CS-001"


def test_erasure_removes_the_loyalty_data(loyalty):
    profile_id = _member_with_everything(loyalty)
    with loyalty.app.app_context():
        request = request_erasure(SYSTEM, profile_id, "test")
        assert run_erasure(request.id) == "completed"
        for model in (Member, MemberChange, Coupon, Redemption, PointAccount, PointEntry):
            assert db.session.scalar(sa.select(sa.func.count()).select_from(model)) == 0, model
        assert ledger.reconciliation()["ok"]
