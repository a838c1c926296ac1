"""Pharmacy POS: HMAC-signed uploads, replay protection, validation, purchases, refill
forecasts, refunds and voids."""

from __future__ import annotations

import time
import uuid

import orjson
import pytest
import sqlalchemy as sa

from cdp.actors import SYSTEM
from cdp.db import db
from cdp.models import Event, Identity, Profile
from cdp.sources import create_source
from connectors import base
from connectors.pos_parse import parse_transactions
from connectors.replay import sign

SECRET = "pos-secret-0123456789abcdef"
PARTNER = "laobaixing"


@pytest.fixture
def source_id(app) -> str:
    with app.app_context():
        source, _ = create_source(SYSTEM, "POS", "pos", {"partner": PARTNER, "secret": SECRET})
        return source.id


def line(**overrides) -> dict:
    item = {
        "line_no": 1,
        "drug_code": "86900001000015",
        "approval_no": "国药准字H20041126",
        "name": "阿托伐他汀钙片 20mg×30片",
        "qty": 2,
        "unit": "盒",
        "unit_price": 98.5,
        "days_of_supply": 30,
        "rx": True,
        "prescription_id": "RX-7781",
    }
    item.update(overrides)
    return item


def sale(txn_no="T1", **overrides) -> dict:
    txn = {
        "txn_no": txn_no,
        "store_code": "SZ001",
        "txn_time": "2025-03-01T10:15:00+08:00",
        "member": {"card_no": "M0001", "phone": "13761234567"},
        "lines": [line(), line(line_no=2, drug_code="6901234", name="维生素C片", qty=1,
                                unit_price=12.0, days_of_supply=None, rx=False,
                                prescription_id="", approval_no="国药准字H11021234")],
        "coupons": ["CP-8812"],
        "points_used": 100,
        "points_earned": 19,
        "total_amount": 199.0,
        "discount_amount": 10.0,
        "payment_method": "wechat_pay",
    }  # fmt: skip
    txn["lines"][1].pop("days_of_supply")
    txn.update(overrides)
    return txn


def post(client, source_id, payload, secret=SECRET, nonce=None, timestamp=None, raw=None):
    body = raw if raw is not None else orjson.dumps(payload)
    timestamp = timestamp or str(int(time.time()))
    nonce = nonce or uuid.uuid4().hex
    headers = {
        "X-CarePath-Timestamp": timestamp,
        "X-CarePath-Nonce": nonce,
        "X-CarePath-Signature": sign(secret, timestamp, nonce, body),
        "Content-Type": "application/json",
    }
    return client.post(f"/connectors/pos/{source_id}/transactions", data=body, headers=headers)


def stored(app, source_id) -> list[Event]:
    with app.app_context():
        query = sa.select(Event).where(Event.source_id == source_id).order_by(Event.id)
        return list(db.session.scalars(query))


def profile_traits(app) -> dict:
    with app.app_context():
        [profile] = db.session.scalars(sa.select(Profile).where(Profile.merged_into_id.is_(None)))
        return dict(profile.traits)


def test_signed_sale_becomes_a_purchase_with_refill_forecast(client, app, source_id):
    response = post(client, source_id, {"transactions": [sale()]})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["accepted"] == 1
    [event] = stored(app, source_id)
    assert event.name == "pos_purchase" and event.message_id == "pos:SZ001:T1"
    props = event.properties
    assert props["coupon_codes"] == ["CP-8812"] and props["points_used"] == 100
    assert props["rx"] is True and props["prescription_ids"] == ["RX-7781"]
    statin = props["items"][0]
    assert statin["approval_no"] == "国药准字H20041126"
    assert statin["unit_price"] == 98.5 and statin["qty"] == 2
    assert statin["days_of_supply"] == 60 and statin["unit_days_of_supply"] == 30
    # Purchased 2025-03-01 (Shanghai), 2 packs x 30 days -> runs out 2025-04-30.
    traits = profile_traits(app)
    assert traits["refill_run_out_86900001000015"] == "2025-04-30"
    assert "refill_run_out_6901234" not in traits
    with app.app_context():
        types = {(i.type, i.namespace) for i in db.session.scalars(sa.select(Identity))}
    assert types == {("pharmacy_member", PARTNER), ("phone", "")}


def test_bad_signatures_stale_times_and_replays_are_refused(client, app, source_id):
    payload = {"transactions": [sale()]}
    assert post(client, source_id, payload, secret="wrong-secret-0000000").status_code == 401
    stale = str(int(time.time()) - 301)
    assert post(client, source_id, payload, timestamp=stale).status_code == 401
    body = orjson.dumps(payload)
    response = client.post(f"/connectors/pos/{source_id}/transactions", data=body)
    assert response.status_code == 401
    assert stored(app, source_id) == []
    assert post(client, source_id, payload, nonce="nonce-0001").status_code == 200
    again = post(client, source_id, payload, nonce="nonce-0001")
    assert again.status_code == 409 and "already used" in again.get_json()["message"]
    assert len(stored(app, source_id)) == 1


def test_tampered_body_fails_the_signature(client, app, source_id):
    body = orjson.dumps({"transactions": [sale()]})
    timestamp, nonce = str(int(time.time())), "n-12345678"
    headers = {
        "X-CarePath-Timestamp": timestamp,
        "X-CarePath-Nonce": nonce,
        "X-CarePath-Signature": sign(SECRET, timestamp, nonce, body),
    }
    tampered = body.replace(b'"qty":2', b'"qty":20')
    response = client.post(
        f"/connectors/pos/{source_id}/transactions", data=tampered, headers=headers
    )
    assert response.status_code == 401


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"transactions": [sale(), sale("T2", lines=[line(qty=0)])]}, "transactions.1.lines.0.qty"),
        ({"transactions": [sale(txn_time="yesterday")]}, "transactions.0.txn_time"),
        ({"transactions": [sale(type="refund")]}, "transactions.0"),
        ({"transactions": "nope"}, "transactions"),
        ({"transactions": []}, "transactions"),
    ],
)
def test_malformed_transactions_are_refused_whole(client, app, source_id, payload, field):
    response = post(client, source_id, payload)
    assert response.status_code == 400
    body = response.get_json()
    assert field in body["message"]
    assert stored(app, source_id) == []  # the valid first transaction was not stored either


def test_invalid_json_and_oversize(client, app, source_id):
    assert post(client, source_id, None, raw=b"{not json").status_code == 400
    huge = b'{"transactions": [' + b" " * (2048 * 1024) + b"]}"
    assert post(client, source_id, None, raw=huge).status_code == 413


def test_anonymous_sales_are_skipped_not_failed(client, app, source_id):
    response = post(client, source_id, {"transactions": [sale(member=None), sale("T2")]})
    body = response.get_json()
    assert response.status_code == 200 and body["accepted"] == 1
    assert body["skipped"] == [{"index": 0, "txn_no": "T1", "reason": "no member card or phone"}]


def test_partial_refund_moves_the_forecast_back_and_void_clears_it(client, app, source_id):
    assert post(client, source_id, {"transactions": [sale()]}).status_code == 200
    refund = {
        "txn_no": "R1",
        "type": "refund",
        "orig_txn_no": "T1",
        "store_code": "SZ001",
        "txn_time": "2025-03-02T09:00:00+08:00",
        "member": {"card_no": "M0001"},
        "lines": [line(qty=1)],
    }
    response = post(client, source_id, {"transactions": [refund]})
    assert response.status_code == 200, response.get_json()
    reversal = stored(app, source_id)[-1]
    assert reversal.name == "pos_reversal"
    assert reversal.properties["reversal_type"] == "refund"
    assert reversal.properties["orig_txn_no"] == "T1"
    assert profile_traits(app)["refill_run_out_86900001000015"] == "2025-03-31"
    void = {
        "txn_no": "V1",
        "type": "void",
        "orig_txn_no": "T1",
        "store_code": "SZ001",
        "txn_time": "2025-03-02T09:05:00+08:00",
        "member": {"card_no": "M0001"},
    }
    assert post(client, source_id, {"transactions": [void]}).status_code == 200
    assert profile_traits(app)["refill_run_out_86900001000015"] is None
    assert len(stored(app, source_id)[-1].properties["items"]) == 2  # the voided lines


def test_a_later_purchase_is_not_undone_by_refunding_an_earlier_one(client, app, source_id):
    later = sale("T2", txn_time="2025-04-20T10:00:00+08:00")
    assert post(client, source_id, {"transactions": [sale(), later]}).status_code == 200
    refund = {
        "txn_no": "R1",
        "type": "refund",
        "orig_txn_no": "T1",
        "store_code": "SZ001",
        "txn_time": "2025-04-21T09:00:00+08:00",
        "member": {"card_no": "M0001"},
        "lines": [line(qty=2)],
    }
    assert post(client, source_id, {"transactions": [refund]}).status_code == 200
    assert profile_traits(app)["refill_run_out_86900001000015"] == "2025-06-19"


def test_retried_upload_is_deduped_and_a_failed_one_frees_its_nonce(
    client, app, source_id, monkeypatch
):
    from cdp.exceptions import Unavailable

    payload = {"transactions": [sale()]}
    real = base.ingest

    def down(*args, **kwargs):
        raise Unavailable("down")

    monkeypatch.setattr(base, "ingest", down)
    assert post(client, source_id, payload, nonce="retry-nonce-1").status_code == 503
    monkeypatch.setattr(base, "ingest", real)
    assert post(client, source_id, payload, nonce="retry-nonce-1").status_code == 200
    second = post(client, source_id, payload)  # re-signed resend of the same transaction
    assert second.get_json()["duplicates"] == 1
    assert len(stored(app, source_id)) == 1


def test_parser_without_http_for_the_demo_seed():
    messages, skipped, positions = parse_transactions({"transactions": [sale()]}, PARTNER)
    assert skipped == [] and positions == [0]
    assert messages[0]["context"]["externalIds"] == [
        {"type": "pharmacy_member", "id": "M0001", "collection": PARTNER}
    ]


def _without(txn: dict, *keys) -> dict:
    return {k: v for k, v in txn.items() if k not in keys}


AGREEMENT_SAMPLES = [
    sale(),
    sale(member=None),
    sale(type="refund", orig_txn_no="T0"),
    _without(sale(type="void", orig_txn_no="T0"), "lines"),
    _without(sale(type="void"), "lines"),
    _without(sale(), "lines"),
    _without(sale(), "store_code"),
    sale(lines=[]),
    sale(lines=[line(qty=0)]),
    sale(lines=[line(qty=True)]),
    sale(lines=[line(rx="yes")]),
    sale(lines=[_without(line(), "name")]),
    sale(lines=[line(days_of_supply=5000)]),
    sale(coupons=["x" * 65]),
    sale(type="gift"),
    sale(member={"card_no": 12345}),
    sale(member="M1"),
    sale(points_used=-1),
    "not a transaction",
]


@pytest.mark.parametrize("index", range(len(AGREEMENT_SAMPLES)))
def test_fast_check_agrees_with_the_documented_json_schema(index):
    from connectors.pos_parse import TransactionError, check, schema_validator

    sample = AGREEMENT_SAMPLES[index]
    try:
        check(sample, "t")
        ours = True
    except TransactionError:
        ours = False
    assert ours == schema_validator().is_valid(sample)
