"""The points ledger: idempotent earn/burn/reverse, no overdraft under concurrency, FIFO expiry,
the doctors' annual cap with an audited refusal, merges, reconciliation, append-only lines."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa

from cdp.actors import SYSTEM
from cdp.db import db, utcnow
from cdp.ingest.pipeline import ingest
from cdp.loyalty import ledger, points
from cdp.models import AuditEntry
from cdp.models.loyalty import PointEntry, PointLot
from cdp.sources import create_source
from tests.test_loyalty_support import setup_loyalty


@pytest.fixture
def loyalty(app):
    return setup_loyalty(app)


OTC = {"product_code": "D017", "amount": "100.00"}  # 布洛芬, 乙类 OTC
RX = {"product_code": "D001", "amount": "98.50"}  # 阿托伐他汀, Rx


def earn(loyalty, card, order, items, partner=None):
    partner = partner or loyalty.a
    return loyalty.client.post(
        "/api/v1/partner/points/earn",
        json={"member": card, "order_id": order, "store_code": partner.store, "items": items},
        headers=partner.headers,
    )


def burn(loyalty, card, order, amount, client=None):
    return (client or loyalty.client).post(
        "/api/v1/partner/points/burn",
        json={"member": card, "order_id": order, "store_code": loyalty.a.store, "points": amount},
        headers=loyalty.a.headers,
    )


def balance(loyalty, card):
    response = loyalty.client.get(
        f"/api/v1/partner/points?member={card}", headers=loyalty.a.headers
    )
    return response.get_json()["balance"]


def test_purchase_earns_on_non_prescription_items_once_per_order(loyalty):
    loyalty.member(loyalty.a, "P-1", "13700000001")
    first = earn(loyalty, "P-1", "O-1", [OTC, RX, {"product_code": "X9", "amount": 5, "rx": False}])
    assert first.status_code == 201, first.get_json()
    assert first.get_json()["points"] == 105  # 100 + 5 yuan; the Rx line earns nothing
    again = earn(loyalty, "P-1", "O-1", [OTC])
    assert again.status_code == 200 and again.get_json()["replayed"] is True
    assert again.get_json()["entry_id"] == first.get_json()["entry_id"]
    assert balance(loyalty, "P-1") == 105
    unknown = earn(loyalty, "P-1", "O-2", [{"product_code": "X9", "amount": 5}])
    assert unknown.status_code == 422 and "items.0.rx" in unknown.get_json()["message"]


def test_burn_never_overdraws_and_takes_oldest_points_first(loyalty):
    loyalty.member(loyalty.a, "P-2", "13700000002")
    earn(loyalty, "P-2", "O-1", [{**OTC, "amount": "30"}])
    earn(loyalty, "P-2", "O-2", [{**OTC, "amount": "50"}])
    short = burn(loyalty, "P-2", "B-1", 81)
    assert short.status_code == 409 and "balance is 80" in short.get_json()["message"]
    assert burn(loyalty, "P-2", "B-2", 40).status_code == 201
    assert burn(loyalty, "P-2", "B-2", 40).get_json()["replayed"] is True
    with loyalty.app.app_context():
        lots = db.session.scalars(sa.select(PointLot.remaining).order_by(PointLot.id)).all()
        assert lots == [0, 40]


def test_concurrent_burns_cannot_overdraw(loyalty):
    loyalty.member(loyalty.a, "P-3", "13700000003")
    earn(loyalty, "P-3", "O-1", [OTC])
    statuses = []
    barrier = threading.Barrier(30)

    def spend(n):
        client = loyalty.app.test_client()
        barrier.wait()
        statuses.append(burn(loyalty, "P-3", f"B-{n}", 7, client).status_code)

    threads = [threading.Thread(target=spend, args=(n,)) for n in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses.count(201) == 14 and statuses.count(409) == 16
    assert balance(loyalty, "P-3") == 2
    with loyalty.app.app_context():
        assert ledger.reconciliation()["ok"]


def test_reverse_an_earn_and_a_burn(loyalty):
    loyalty.member(loyalty.a, "P-4", "13700000004")
    earned = earn(loyalty, "P-4", "O-1", [OTC]).get_json()
    spent = burn(loyalty, "P-4", "B-1", 90).get_json()
    h = loyalty.a.headers
    blocked = loyalty.client.post(
        "/api/v1/partner/points/reverse", json={"entry_id": earned["entry_id"]}, headers=h
    )
    assert blocked.status_code == 409 and "only 10" in blocked.get_json()["message"]
    undo_burn = loyalty.client.post(
        "/api/v1/partner/points/reverse", json={"entry_id": spent["entry_id"]}, headers=h
    )
    assert undo_burn.status_code == 201 and undo_burn.get_json()["balance"] == 100
    twice = loyalty.client.post(
        "/api/v1/partner/points/reverse",
        json={"entry_id": spent["entry_id"], "idempotency_key": "other"},
        headers=h,
    )
    assert twice.status_code == 409
    undo_earn = loyalty.client.post(
        "/api/v1/partner/points/reverse", json={"entry_id": earned["entry_id"]}, headers=h
    )
    assert undo_earn.status_code == 201 and undo_earn.get_json()["balance"] == 0
    with loyalty.app.app_context():
        assert ledger.reconciliation()["ok"]


def test_points_expire_first_in_first_out(loyalty):
    profile_id = loyalty.member(loyalty.a, "P-5", "13700000005")
    earn(loyalty, "P-5", "O-1", [{**OTC, "amount": "30"}])
    earn(loyalty, "P-5", "O-2", [{**OTC, "amount": "50"}])
    burn(loyalty, "P-5", "B-1", 10)
    with loyalty.app.app_context():
        oldest = db.session.scalar(sa.select(PointLot).order_by(PointLot.id).limit(1))
        oldest.expires_at = utcnow() - timedelta(minutes=1)
        db.session.commit()
        assert ledger.expire_points(SYSTEM) == 20
        assert ledger.expire_points(SYSTEM) == 0  # idempotent
        assert ledger.balance(profile_id) == 50
        last = db.session.scalar(sa.select(PointEntry).order_by(PointEntry.id.desc()).limit(1))
        assert (last.kind, last.points, last.balance_after) == ("expire", -20, 50)
        assert ledger.reconciliation()["ok"]


def _doctor(app) -> int:
    with app.app_context():
        source = create_source(SYSTEM, "hcp portal", "http", default_profile_kind="hcp")[0]
        result = ingest(source, [{"type": "identify", "userId": "doc-1"}])
        return result.profile_ids[0]


def test_doctor_points_are_capped_per_year_and_the_refusal_is_audited(loyalty):
    loyalty.app.config["LOYALTY_HCP_ANNUAL_CAP"] = 50
    doctor = _doctor(loyalty.app)
    url = f"/api/v1/loyalty/points/{doctor}/earn"
    c, h = loyalty.client, loyalty.marketer
    for key in ("q1", "q2"):
        assert (
            c.post(
                url, json={"action": "quiz_completed", "idempotency_key": key}, headers=h
            ).status_code
            == 201
        )
    refused = c.post(url, json={"action": "quiz_completed", "idempotency_key": "q3"}, headers=h)
    assert refused.status_code == 409 and "40 of 50" in refused.get_json()["message"]
    not_educational = c.post(
        url, json={"action": "survey_completed", "idempotency_key": "s1"}, headers=h
    )
    assert not_educational.status_code == 422
    with loyalty.app.app_context():
        audit = db.session.scalar(
            sa.select(AuditEntry).where(AuditEntry.action == "points.hcp_cap_refused")
        )
        assert audit.outcome == "refused" and audit.details["cap"] == 50
        awards = db.session.scalars(
            sa.select(AuditEntry.details).where(AuditEntry.action == "points.earn")
        ).all()
        assert len(awards) == 2 and all(d.get("hcp") for d in awards)
        assert ledger.balance(doctor) == 40


def test_ledger_lines_cannot_be_updated(loyalty):
    loyalty.member(loyalty.a, "P-6", "13700000006")
    earn(loyalty, "P-6", "O-1", [OTC])
    with loyalty.app.app_context():
        with pytest.raises(sa.exc.DatabaseError, match="append-only"):
            db.session.execute(sa.update(PointEntry).values(points=1_000_000))
        db.session.rollback()


def test_adjust_cannot_go_below_zero_and_needs_a_reason(loyalty):
    profile_id = loyalty.member(loyalty.a, "P-7", "13700000007")
    url = f"/api/v1/loyalty/points/{profile_id}/adjust"
    c, h = loyalty.client, loyalty.marketer
    assert (
        c.post(url, json={"points": 5, "reason": "", "idempotency_key": "a"}, headers=h).status_code
        == 422
    )
    assert (
        c.post(
            url, json={"points": 5, "reason": "goodwill", "idempotency_key": "a"}, headers=h
        ).status_code
        == 201
    )
    below = c.post(url, json={"points": -6, "reason": "fix", "idempotency_key": "b"}, headers=h)
    assert below.status_code == 409
    history = c.get(f"/api/v1/loyalty/points/{profile_id}", headers=h).get_json()
    assert history["balance"] == 5 and [e["kind"] for e in history["entries"]] == ["adjust"]


def test_points_follow_a_merge(loyalty):
    with loyalty.app.app_context():
        source = create_source(SYSTEM, "crm", "http")[0]
        phone = {"phone": "13711112222"}
        first = ingest(source, [{"type": "identify", "anonymousId": "a1", "traits": phone}])
        second = ingest(source, [{"type": "identify", "anonymousId": "a2"}])
        first, second = first.profile_ids[0], second.profile_ids[0]
        points.adjust(SYSTEM, first, 30, "welcome", "w1")
        points.adjust(SYSTEM, second, 12, "welcome", "w2")
        # The phone links both: one profile now, and the points add up.
        ingest(source, [{"type": "identify", "anonymousId": "a2", "traits": phone}])
        from cdp.profiles import live_profile_id

        live = live_profile_id(first)
        assert live == live_profile_id(second)
        assert ledger.balance(live) == 42
        result = points.adjust(SYSTEM, live, -42, "spend all", "w3")
        assert result.balance == 0
        assert ledger.reconciliation()["ok"]


def test_reconcile_command(loyalty):
    loyalty.member(loyalty.a, "P-8", "13700000008")
    earn(loyalty, "P-8", "O-1", [OTC])
    result = loyalty.app.test_cli_runner().invoke(args=["loyalty", "reconcile", "--json"])
    assert result.exit_code == 0, result.output
    assert '"ok":true' in result.output
