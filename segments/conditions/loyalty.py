"""Loyalty conditions: a coupon's state (issued, usable, redeemed, expired) and the points balance.

Coupons count on the profile they were issued to; the balance is that of the profile's own
live points account. Expiry passes without an event, so coupon rules are time based (the
scheduled refresh keeps them current); issue, redemption and points events re-check them
in real time.
"""

from __future__ import annotations

import sqlalchemy as sa

from cdp.models.loyalty import Coupon, PointAccount
from segments.conditions.base import PROFILES, Condition, condition_schema, register, scoped
from segments.conditions.events import compare, sql_compare

COUPONS, ACCOUNTS = Coupon.__table__, PointAccount.__table__
COUPON_STATES = ("issued", "usable", "redeemed", "expired")
COUNT = {"type": "integer", "minimum": 0, "maximum": 10**9}


def coupon_in_state(state: str, status: str, valid_from, expires_at, now) -> bool:
    """The Python statement of each state (what the SQL must agree with)."""
    lapsed = status == "issued" and expires_at is not None and expires_at <= now
    if state == "issued":
        return True
    if state == "redeemed":
        return status == "redeemed"
    if state == "expired":
        return status == "expired" or lapsed
    started = valid_from is None or valid_from <= now
    return status == "issued" and not lapsed and started


@register
class CouponState(Condition):
    """``{"state": "usable", "campaign_id": 3}``: holds such a coupon (of any campaign if
    ``campaign_id`` is left out)."""

    type = "coupon"
    label = "Coupon state"
    group = "reach"
    time_based = True
    schema = condition_schema(
        {"state": {"enum": list(COUPON_STATES)},
         "campaign_id": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}},
        ["state"],
    )  # fmt: skip
    example = {"type": "coupon", "state": "usable", "campaign_id": 1}

    def depends_on(self):
        return {"event:coupon_issued", "event:coupon_redeemed", "event:coupon_voided"}

    def compile(self, ctx):
        c, state, now = COUPONS.c, self.node["state"], ctx.now
        lapsed = sa.and_(c.status == "issued", c.expires_at.is_not(None), c.expires_at <= now)
        tests = []
        if "campaign_id" in self.node:
            tests.append(c.campaign_id == self.node["campaign_id"])
        if state == "redeemed":
            tests.append(c.status == "redeemed")
        elif state == "expired":
            tests.append(sa.or_(c.status == "expired", lapsed))
        elif state == "usable":
            started = sa.or_(c.valid_from.is_(None), c.valid_from <= now)
            tests += [c.status == "issued", sa.not_(lapsed), started]
        query = sa.select(c.profile_id).where(*tests)
        return PROFILES.c.id.in_(scoped(query, c.profile_id, ctx))

    def evaluate(self, facts, ctx):
        wanted = self.node.get("campaign_id")
        return any(
            (wanted is None or campaign_id == wanted)
            and coupon_in_state(self.node["state"], status, valid_from, expires_at, ctx.now)
            for campaign_id, status, valid_from, expires_at in facts.coupons
        )


@register
class PointsBalance(Condition):
    """``{"op": "gte", "value": 500}``: the points balance (0 without an account)."""

    type = "points"
    label = "Points balance"
    group = "reach"
    schema = condition_schema(
        {"op": {"enum": ["equals", "gt", "gte", "lt", "lte", "between"]},
         "value": {"oneOf": [COUNT, {"type": "array", "items": COUNT, "minItems": 2,
                                     "maxItems": 2}]}},
        ["op", "value"],
        allOf=[{
            "if": {"required": ["op"], "properties": {"op": {"const": "between"}}},
            "then": {"properties": {"value": {"type": "array"}}},
            "else": {"properties": {"value": {"type": "integer"}}},
        }],
    )  # fmt: skip
    example = {"type": "points", "op": "gte", "value": 500}

    def problems(self, _loader):
        value = self.node.get("value")
        if self.node.get("op") == "between" and isinstance(value, list) and value[0] > value[1]:
            return [("value", "the lower bound must not exceed the upper bound")]
        return []

    def depends_on(self):
        names = ("points_earned", "points_burned", "points_expired", "points_reversed")
        return {f"event:{name}" for name in names} | {"event:points_adjusted"}

    def compile(self, ctx):
        a = ACCOUNTS.c
        balance = (
            sa.select(sa.func.coalesce(sa.func.sum(a.balance), 0))
            .where(a.profile_id == PROFILES.c.id, a.merged_into_id.is_(None))
            .scalar_subquery()
        )
        return sql_compare(balance, self.node["op"], self.node["value"])

    def evaluate(self, facts, ctx):
        return compare(facts.points, self.node["op"], self.node["value"])
