"""Segments on loyalty state: coupons (issued, usable, redeemed, expired) and points balance."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from cdp.actors import SYSTEM
from cdp.db import db, utcnow
from cdp.loyalty.points import adjust
from cdp.models.loyalty import Coupon
from segments.compiler import compile_query
from segments.membership import make_context
from segments.reference import load_facts, reference_members
from tests.test_loyalty_coupons import _patients
from tests.test_loyalty_support import setup_loyalty


@pytest.fixture
def loyalty(app):
    return setup_loyalty(app)


def members(rule: dict) -> set[int]:
    """The compiled SQL's answer, checked against the reference evaluator."""
    definition, ctx = {"rule": rule}, make_context()
    sql = set(db.session.scalars(compile_query(definition, ctx)))
    assert reference_members(definition, ctx, load_facts()) == sql, rule
    return sql


def test_coupon_states_and_points_balance(loyalty):
    holder, redeemer, lapsed, rich, nobody = _patients(loyalty.app, 5)
    first, second = loyalty.campaign(per_profile_limit=3), loyalty.campaign(per_profile_limit=3)
    for pid, key in ((holder, "a"), (redeemer, "b"), (lapsed, "c")):
        assert loyalty.issue(first, pid, f"seg-{key}").status_code == 201
    assert loyalty.issue(second, rich, "seg-d").status_code == 201
    with loyalty.app.app_context():
        now = utcnow()
        db.session.execute(
            sa.update(Coupon).where(Coupon.profile_id == redeemer)
            .values(status="redeemed", redeemed_at=now)
        )  # fmt: skip
        db.session.execute(  # its expiry passed; the nightly job has not marked it yet
            sa.update(Coupon).where(Coupon.profile_id == lapsed)
            .values(expires_at=now - timedelta(hours=1))
        )  # fmt: skip
        db.session.commit()
        adjust(SYSTEM, rich, 800, "goodwill", "seg-points-1")
        adjust(SYSTEM, holder, 100, "goodwill", "seg-points-2")
        assert members({"type": "coupon", "state": "issued"}) == {holder, redeemer, lapsed, rich}
        assert members({"type": "coupon", "state": "usable"}) == {holder, rich}
        assert members({"type": "coupon", "state": "usable", "campaign_id": first}) == {holder}
        assert members({"type": "coupon", "state": "redeemed"}) == {redeemer}
        assert members({"type": "coupon", "state": "expired"}) == {lapsed}
        assert members({"type": "points", "op": "gte", "value": 500}) == {rich}
        assert members({"type": "points", "op": "between", "value": [1, 200]}) == {holder}
        assert nobody in members({"type": "points", "op": "equals", "value": 0})
