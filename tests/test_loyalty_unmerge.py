"""Undoing a merge gives each person back their own unspent points and their own coupons."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from cdp.actors import SYSTEM
from cdp.db import db
from cdp.identity.merges import unmerge
from cdp.ingest.pipeline import ingest
from cdp.loyalty import coupons, ledger, points
from cdp.models import Merge
from cdp.profiles import live_profile_id
from cdp.sources import create_source
from tests.test_loyalty_support import setup_loyalty


@pytest.fixture
def loyalty(app):
    return setup_loyalty(app)


def identify(source, anonymous_id: str, **traits):
    message = {"type": "identify", "anonymousId": anonymous_id, "traits": traits}
    return ingest(source, [message]).profile_ids[0]


def codes_of(profile_id: int) -> set[str]:
    return {c.code for c, _ in coupons.profile_coupons(profile_id)}


def test_unmerge_splits_points_and_coupons_back(loyalty):
    campaign = loyalty.campaign()
    with loyalty.app.app_context():
        source = create_source(SYSTEM, "crm", "http")[0]
        first = identify(source, "a1", phone="13711112222")
        second = identify(source, "a2")
        points.adjust(SYSTEM, first, 30, "welcome", "w1")
        points.adjust(SYSTEM, second, 12, "welcome", "w2")
        first_code = coupons.issue_coupon(SYSTEM, campaign, first, "c1")[0].code
        second_code = coupons.issue_coupon(SYSTEM, campaign, second, "c2")[0].code
        identify(source, "a2", phone="13711112222")  # the phone links them: one person now
        live = live_profile_id(first)
        assert live == live_profile_id(second) and ledger.balance(live) == 42
        # Changes after the merge fold the accounts; the oldest points (the first's) go first.
        points.adjust(SYSTEM, live, -10, "spent", "s1")
        points.adjust(SYSTEM, live, 5, "goodwill", "g1")
        assert ledger.balance(live) == 37
        merge = db.session.scalar(sa.select(Merge).where(Merge.undone_at.is_(None)))
        survivor, merged = merge.survivor_id, merge.merged_id

        unmerge(SYSTEM, merged)

        after_merge = {survivor: 5, merged: 0}  # what came after the merge stays
        assert ledger.balance(first) == 20 + after_merge[first]
        assert ledger.balance(second) == 12 + after_merge[second]
        assert codes_of(first) == {first_code}
        assert codes_of(second) == {second_code}
        report = ledger.reconciliation()
        assert report["ok"], report["mismatches"]
        # Each side can spend exactly its own balance again, and no more.
        for profile_id in (first, second):
            balance = ledger.balance(profile_id)
            assert (
                points.adjust(SYSTEM, profile_id, -balance, "spend", f"all-{profile_id}").balance
                == 0
            )
        assert ledger.reconciliation()["ok"]


def test_unmerge_before_any_points_change_keeps_both_balances(loyalty):
    with loyalty.app.app_context():
        source = create_source(SYSTEM, "crm", "http")[0]
        first = identify(source, "b1", phone="13722223333")
        second = identify(source, "b2")
        points.adjust(SYSTEM, second, 8, "welcome", "w")
        identify(source, "b2", phone="13722223333")
        merge = db.session.scalar(sa.select(Merge).where(Merge.undone_at.is_(None)))
        unmerge(SYSTEM, merge.merged_id)
        assert (ledger.balance(first), ledger.balance(second)) == (0, 8)
        assert ledger.reconciliation()["ok"]
