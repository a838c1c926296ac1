"""Tenant isolation: partner B cannot read or change partner A's members, coupons, redemptions,
points or syncs by any id, card, phone or code; every attempt is a 404 and changes nothing."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from cdp.db import db
from cdp.models.loyalty import Coupon, PointAccount, Redemption
from tests.test_loyalty_support import setup_loyalty


@pytest.fixture
def loyalty(app):
    return setup_loyalty(app)


def _seed_partner_a(loyalty):
    """A member of A with a coupon, a redemption, points, a sync with a rejected row."""
    c, h = loyalty.client, loyalty.a.headers
    sync = loyalty.sync(loyalty.a, [{"card_no": "A-1", "phone": "13811110000"}, {"card_no": "?"}])
    profile_id = loyalty.member(loyalty.a, "A-1", "13811110000")
    # Open to every partner: eligibility alone must not expose A's member to B.
    campaign = loyalty.campaign(budget=10, per_profile_limit=2)
    kept = loyalty.coupon(campaign, profile_id, "keep")
    used = loyalty.coupon(campaign, profile_id, "use")
    redemption = c.post(
        f"/api/v1/partner/coupons/{used}/redeem",
        json={"store_code": "LBX-CS-001", "order_id": "A-O-1", "amount": 30},
        headers=h,
    ).get_json()
    earn = c.post(
        "/api/v1/partner/points/earn",
        json={
            "member": "A-1",
            "order_id": "A-O-1",
            "store_code": "LBX-CS-001",
            "items": [{"product_code": "D017", "amount": "100.00"}],
        },
        headers=h,
    ).get_json()
    return {
        "profile_id": profile_id,
        "sync_id": sync.get_json()["sync_id"],
        "kept": kept,
        "used": used,
        "redemption_id": redemption["id"],
        "entry_id": earn["entry_id"],
    }


def _state(loyalty):
    with loyalty.app.app_context():
        return (
            sorted(db.session.execute(sa.select(Coupon.code, Coupon.status)).tuples()),
            sorted(db.session.execute(sa.select(Redemption.id, Redemption.voided_at)).tuples()),
            sorted(db.session.execute(sa.select(PointAccount.id, PointAccount.balance)).tuples()),
        )


def test_partner_b_gets_404_for_everything_of_partner_a(loyalty):
    a = _seed_partner_a(loyalty)
    before = _state(loyalty)
    c = loyalty.client
    hb = {**loyalty.b.headers, "X-Partner-Id": str(loyalty.a.id), "X-Tenant-Id": "lbx"}
    store = {"store_code": "YF-CS-001"}
    attempts = [
        ("GET", "/api/v1/partner/members/A-1", None),
        ("GET", "/api/v1/partner/coupons?member=A-1", None),
        ("GET", "/api/v1/partner/coupons?phone=13811110000", None),
        ("POST", "/api/v1/partner/coupons/lookup", {"phone": "13811110000"}),
        ("POST", "/api/v1/partner/coupons/lookup", {"member": "A-1"}),
        ("GET", f"/api/v1/partner/coupons/{a['kept']}", None),
        ("GET", f"/api/v1/partner/coupons/{a['used']}", None),
        ("POST", f"/api/v1/partner/coupons/{a['kept']}/redeem", {**store, "order_id": "B-1"}),
        ("POST", f"/api/v1/partner/coupons/{a['used']}/redeem", {**store, "order_id": "B-2"}),
        ("POST", f"/api/v1/partner/redemptions/{a['redemption_id']}/void", {}),
        ("GET", f"/api/v1/partner/member-syncs/{a['sync_id']}", None),
        ("GET", f"/api/v1/partner/member-syncs/{a['sync_id']}/rejected", None),
        ("GET", "/api/v1/partner/points?member=A-1", None),
        ("GET", "/api/v1/partner/points?phone=13811110000", None),
        (
            "POST",
            "/api/v1/partner/points/earn",
            {**store, "member": "A-1", "order_id": "B-3", "items": [{"product_code": "D017", "amount": 9}]},
        ),
        ("POST", "/api/v1/partner/points/burn", {**store, "member": "A-1", "order_id": "B-4", "points": 1}),
        ("POST", "/api/v1/partner/points/burn", {**store, "phone": "13811110000", "order_id": "B-5", "points": 1}),
        ("POST", "/api/v1/partner/points/reverse", {"entry_id": a["entry_id"]}),
    ]  # fmt: skip
    for method, url, body in attempts:
        response = c.open(url, method=method, json=body, headers=hb)
        assert response.status_code == 404, (method, url, response.status_code, response.get_json())
    assert _state(loyalty) == before
    # Lists are scoped too, and the tenant headers changed nothing.
    assert c.get("/api/v1/partner/redemptions", headers=hb).get_json()["items"] == []
    assert c.get("/api/v1/partner/members/changes", headers=hb).get_json()["items"] == []
    assert c.get("/api/v1/partner/me", headers=hb).get_json()["code"] == "yf"
    # Partner A still sees its own.
    ha = loyalty.a.headers
    assert c.get(f"/api/v1/partner/coupons/{a['used']}", headers=ha).status_code == 200
    assert len(c.get("/api/v1/partner/redemptions", headers=ha).get_json()["items"]) == 1


def test_a_shared_member_sees_only_their_own_chains_redemption_details(loyalty):
    """One person with a card at each chain: B may redeem B-eligible coupons, not void A's."""
    profile_id = loyalty.member(loyalty.a, "A-2", "13822220000")
    assert loyalty.member(loyalty.b, "B-2", "13822220000") == profile_id
    only_a = loyalty.campaign(partner_ids=[loyalty.a.id])
    code = loyalty.coupon(only_a, profile_id)
    hb = loyalty.b.headers
    assert (
        loyalty.client.get("/api/v1/partner/coupons?member=B-2", headers=hb).get_json()["items"]
        == []
    )
    assert loyalty.client.get(f"/api/v1/partner/coupons/{code}", headers=hb).status_code == 404
    both = loyalty.campaign(name="both")
    shared = loyalty.coupon(both, profile_id)
    rid = loyalty.client.post(
        f"/api/v1/partner/coupons/{shared}/redeem",
        json={"store_code": "LBX-CS-001", "order_id": "A-9"},
        headers=loyalty.a.headers,
    ).get_json()["id"]
    # B sees the coupon is used (it is its member's), but not A's order, and cannot void it.
    again = loyalty.client.post(
        f"/api/v1/partner/coupons/{shared}/redeem",
        json={"store_code": "YF-CS-001", "order_id": "B-9"},
        headers=hb,
    )
    assert again.status_code == 409 and "A-9" not in again.get_json()["message"]
    void = loyalty.client.post(f"/api/v1/partner/redemptions/{rid}/void", json={}, headers=hb)
    assert void.status_code == 404


def test_another_partners_store_code_is_refused(loyalty):
    profile_id = loyalty.member(loyalty.b, "B-3", "13833330000")
    code = loyalty.coupon(loyalty.campaign(), profile_id)
    response = loyalty.client.post(
        f"/api/v1/partner/coupons/{code}/redeem",
        json={"store_code": "LBX-CS-001", "order_id": "B-1"},
        headers=loyalty.b.headers,
    )
    assert response.status_code == 422
    assert response.get_json()["errors"] == {
        "store_code": ["store_code: 'LBX-CS-001' is not one of your stores"]
    }
