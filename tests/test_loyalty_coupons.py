"""Coupon campaigns and coupons: the Rx rule, idempotent issue within budget and per-profile
limit (also under concurrency), checksummed codes, expiry, events and campaign figures."""

from __future__ import annotations

import itertools
import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa

from cdp.actors import SYSTEM
from cdp.db import db, utcnow
from cdp.ingest.pipeline import ingest
from cdp.loyalty import codes
from cdp.loyalty.tasks import expire_due
from cdp.models import Event, OutboxBatch
from cdp.models.loyalty import Coupon, CouponCampaign, MemberChange
from cdp.sources import create_source
from tests.test_loyalty_support import setup_loyalty


@pytest.fixture
def loyalty(app):
    return setup_loyalty(app)


def create(loyalty, **body):
    base = {"name": "n", "type": "amount_off", "value": 5, "budget": 10, "valid_days": 7}
    return loyalty.client.post(
        "/api/v1/coupon-campaigns", json={**base, **body}, headers=loyalty.marketer
    )


# --- the Rx rule and validation ---------------------------------------------------------------


def test_prescription_products_are_refused_with_the_field_named(loyalty):
    rx = create(loyalty, products=["D017", "D001"])
    assert rx.status_code == 422
    message = rx.get_json()["errors"]["products"][0]
    assert "D001" in message and "prescription (Rx)" in message and "patients" in message
    hcp = create(loyalty, products=["D001"], audience="hcp")
    assert hcp.status_code == 422 and "anti-bribery" in hcp.get_json()["message"]
    gift = create(loyalty, type="gift", value=0, products=["D018"])  # 连花清瘟, 甲类 OTC
    assert gift.status_code == 422 and "甲类" in gift.get_json()["message"]
    unknown = create(loyalty, products=["NOPE"])
    assert unknown.status_code == 422 and "catalogue" in unknown.get_json()["message"]
    assert create(loyalty, products=["D017"]).status_code == 201


def test_other_campaign_validation(loyalty):
    assert create(loyalty, valid_days=None).get_json()["errors"] == {
        "valid_days": ["give valid_days (days after issue) or valid_until"]
    }
    assert create(loyalty, type="percent_off", value=150).status_code == 422
    assert create(loyalty, value="1.234").status_code == 422
    assert create(loyalty, budget=0).status_code == 422
    assert create(loyalty, partner_ids=[999]).status_code == 422
    assert create(loyalty, type="percent_off", value=15).status_code == 201


# --- issue -------------------------------------------------------------------------------------


def _patients(app, n: int) -> list[int]:
    with app.app_context():
        source = create_source(SYSTEM, "crm", "http")[0]
        result = ingest(source, [{"type": "identify", "userId": f"u{i}"} for i in range(n)])
        return result.profile_ids


def test_issue_is_idempotent_by_issue_key(loyalty):
    pid, other = _patients(loyalty.app, 2)
    campaign = loyalty.campaign(per_profile_limit=3)
    first = loyalty.issue(campaign, pid, "journey-7:step-2")
    again = loyalty.issue(campaign, pid, "journey-7:step-2")
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.get_json()["code"] == again.get_json()["code"]
    reused = loyalty.issue(campaign, other, "journey-7:step-2")
    assert reused.status_code == 409 and "another profile" in reused.get_json()["message"]
    code = first.get_json()["code"].replace("-", "")
    assert len(code) == 13 and codes.is_valid(code)
    with loyalty.app.app_context():
        assert db.session.get(CouponCampaign, campaign).issued_count == 1
        event = db.session.scalar(sa.select(Event).where(Event.name == "coupon_issued"))
        assert event.profile_id == pid and event.properties["campaign_id"] == campaign
        assert code not in str(event.properties)  # the code is a bearer secret
        outbox = db.session.scalar(
            sa.select(OutboxBatch).where(OutboxBatch.source_id == event.source_id)
        )
        assert outbox.event_ids == [event.id]


def test_budget_and_per_profile_limit(loyalty):
    pids = _patients(loyalty.app, 4)
    campaign = loyalty.campaign(budget=3, per_profile_limit=2)
    assert loyalty.issue(campaign, pids[0], "a").status_code == 201
    assert loyalty.issue(campaign, pids[0], "b").status_code == 201
    third = loyalty.issue(campaign, pids[0], "c")
    assert third.status_code == 409 and "per_profile_limit" in third.get_json()["errors"]
    assert loyalty.issue(campaign, pids[1], "d").status_code == 201
    over = loyalty.issue(campaign, pids[2], "e")
    assert over.status_code == 409 and "budget exhausted" in over.get_json()["message"]


def test_concurrent_issues_respect_budget_and_limit(loyalty):
    pids = _patients(loyalty.app, 20)
    budget_campaign = loyalty.campaign(budget=5)
    limit_campaign = loyalty.campaign(budget=100, per_profile_limit=2)
    statuses: dict[str, list[int]] = {"budget": [], "limit": []}
    barrier = threading.Barrier(30)

    def issue(kind, campaign, pid, key):
        client = loyalty.app.test_client()
        barrier.wait()
        response = client.post(
            f"/api/v1/coupon-campaigns/{campaign}/issue",
            json={"profile_id": pid, "issue_key": key},
            headers=loyalty.marketer,
        )
        statuses[kind].append(response.status_code)

    jobs = [("budget", budget_campaign, pid, f"b{pid}") for pid in pids]
    jobs += [("limit", limit_campaign, pids[0], f"l{n}") for n in range(10)]
    threads = [threading.Thread(target=issue, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses["budget"]) == [201] * 5 + [409] * 15
    assert sorted(statuses["limit"]) == [201] * 2 + [409] * 8
    with loyalty.app.app_context():
        count = sa.select(sa.func.count()).select_from(Coupon)
        assert db.session.scalar(count.where(Coupon.campaign_id == budget_campaign)) == 5
        assert db.session.scalar(count.where(Coupon.campaign_id == limit_campaign)) == 2


def test_status_controls_issuing_and_redeeming(loyalty):
    profile_id = loyalty.member(loyalty.a, "S-1", "13400000001")
    campaign = loyalty.campaign(status="draft")
    assert loyalty.issue(campaign, profile_id).status_code == 409
    url = f"/api/v1/coupon-campaigns/{campaign}/status"
    assert (
        loyalty.client.post(url, json={"status": "active"}, headers=loyalty.marketer).status_code
        == 200
    )
    code = loyalty.coupon(campaign, profile_id)
    assert (
        loyalty.client.post(url, json={"status": "ended"}, headers=loyalty.marketer).status_code
        == 200
    )
    assert (
        loyalty.client.post(url, json={"status": "active"}, headers=loyalty.marketer).status_code
        == 409
    )
    redeem = loyalty.client.post(
        f"/api/v1/partner/coupons/{code}/redeem",
        json={"store_code": "LBX-CS-001", "order_id": "O"},
        headers=loyalty.a.headers,
    )
    assert redeem.status_code == 409 and "ended" in redeem.get_json()["message"]


def test_doctor_cannot_get_a_patient_campaign_coupon(loyalty):
    with loyalty.app.app_context():
        source = create_source(SYSTEM, "hcp", "http", default_profile_kind="hcp")[0]
        doctor = ingest(source, [{"type": "identify", "userId": "d1"}]).profile_ids[0]
    response = loyalty.issue(loyalty.campaign(), doctor)
    assert response.status_code == 409 and "patient" in response.get_json()["message"]


# --- codes --------------------------------------------------------------------------------------


def test_codes_catch_every_single_typo_and_most_swaps():
    for _ in range(50):
        code = codes.new_code()
        assert codes.is_valid(code) and codes.normalise(codes.display(code)) == code
        for i, ch in itertools.product(range(len(code)), codes.ALPHABET):
            if ch != code[i]:
                assert not codes.is_valid(code[:i] + ch + code[i + 1 :])
    caught = total = 0
    for _ in range(200):
        code = codes.new_code()
        for i in range(len(code) - 1):
            if code[i] != code[i + 1]:
                total += 1
                caught += not codes.is_valid(code[:i] + code[i + 1] + code[i] + code[i + 2 :])
    assert caught / total > 0.95
    assert codes.normalise("abcd-efgh-ijkl o") == "ABCDEFGH1JK10"


# --- expiry, figures --------------------------------------------------------------------------


def test_expiry_job_expires_due_coupons_with_events_and_changes(loyalty):
    profile_id = loyalty.member(loyalty.a, "E-1", "13400000002")
    campaign = loyalty.campaign()
    code = loyalty.coupon(campaign, profile_id)
    with loyalty.app.app_context():
        coupon = db.session.scalar(sa.select(Coupon))
        coupon.expires_at = utcnow() - timedelta(seconds=1)
        db.session.commit()
        assert expire_due() == {"coupons": 1, "points": 0}
        assert expire_due() == {"coupons": 0, "points": 0}
        assert db.session.scalar(sa.select(Coupon.status)) == "expired"
        assert (
            db.session.scalar(sa.select(sa.func.count()).where(Event.name == "coupon_expired")) == 1
        )
        kinds = db.session.scalars(sa.select(MemberChange.kind).order_by(MemberChange.id)).all()
        assert kinds == ["coupon_issued", "coupon_expired"]
    redeem = loyalty.client.post(
        f"/api/v1/partner/coupons/{code}/redeem",
        json={"store_code": "LBX-CS-001", "order_id": "O"},
        headers=loyalty.a.headers,
    )
    assert redeem.status_code == 409 and "expired" in redeem.get_json()["message"]


def test_campaign_figures(loyalty):
    campaign = loyalty.campaign(type="percent_off", value=20, budget=50)
    for n in range(3):
        profile_id = loyalty.member(loyalty.a, f"K-{n}", f"1340000010{n}")
        code = loyalty.coupon(campaign, profile_id, f"key-{n}")
        if n < 2:
            loyalty.client.post(
                f"/api/v1/partner/coupons/{code}/redeem",
                json={"store_code": "LBX-CS-001", "order_id": f"O-{n}", "amount": "50.00"},
                headers=loyalty.a.headers,
            )
    body = loyalty.client.get(
        f"/api/v1/coupon-campaigns/{campaign}", headers=loyalty.marketer
    ).get_json()
    assert body["stats"]["issued"] == 3 and body["stats"]["redeemed"] == 2
    assert body["stats"]["rate"] == 0.6667 and body["stats"]["cost"] == "20.00"
    assert body["by_store"] == [
        {"partner_id": loyalty.a.id, "partner": "老百姓大药房", "store_code": "LBX-CS-001",
         "redeemed": 2, "cost": "20.00", "sales": "100.00"}
    ]  # fmt: skip
    assert body["burn_down"][-1]["total"] == 3 and body["burn_down"][-1]["left"] == 47
    listing = loyalty.client.get("/api/v1/coupon-campaigns", headers=loyalty.marketer).get_json()
    assert listing["items"][0]["stats"]["redeemed"] == 2
