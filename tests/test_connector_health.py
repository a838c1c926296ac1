"""Source health (activity, errors with masked payloads, cursors), endpoint URLs of every kind,
the ``cdp connectors`` commands, the parsers the demo seed can call, and group commit."""

from __future__ import annotations

import json
import threading
import time

import sqlalchemy as sa

from cdp.actors import SYSTEM
from cdp.db import db
from cdp.models import Event, Source
from cdp.seed import wire as seed_wire
from cdp.sources import create_source
from connectors import base, batcher, ecommerce, ecommerce_pull, miniprogram, pos, wechat
from connectors.health import mask_payload, source_health
from connectors.models import ConnectorCursor
from tests.test_connector_wechat import event_xml, make_source, plain_query, text_xml

OPENID = "oyORnuP8q7ou2gfYjqLzSIWZf0rs"


def test_masking_hides_personal_values_and_secrets():
    masked = mask_payload(
        '{"buyer_phone": "13761234567", "name": "李娜", "id": "110101199003074514",'
        ' "note": "call 13912345678 or mail li.na@example.cn", "secret": "abcdef123456"}'
    )
    for secret in ("13761234567", "李娜", "110101199003074514", "13912345678", "li.na@example.cn",
                   "abcdef123456"):  # fmt: skip
        assert secret not in masked
    xml = mask_payload(text_xml("我的手机号是13761234567"))
    assert OPENID not in xml and "13761234567" not in xml and "<MsgId>" in xml
    assert len(mask_payload("x" * 10_000)) <= 2001


def test_health_counts_events_and_errors_and_masks_payloads(client, app):
    source_id = make_source(app)
    url = f"/connectors/wechat/{source_id}"
    for n in range(3):
        xml = event_xml("CLICK", created=1700000000 + n, EventKey=f"K{n}")
        assert client.post(url, query_string=plain_query(), data=xml).status_code == 200
    client.post(url, query_string=plain_query(), data=event_xml("CLICK", EventKey="K0"))  # retry
    bad = {**plain_query(), "signature": "0" * 40}
    assert client.post(url, query_string=bad, data=text_xml()).status_code == 403
    with app.app_context():
        health = source_health(source_id)
    assert health["events_last_hour"] == 3 and health["duplicates_last_hour"] == 1
    assert health["errors_last_hour"] == 1 and health["last_event_at"] is not None
    [error] = health["last_errors"]
    assert error["status"] == 403 and "signature" in error["reason"]
    assert OPENID not in error["payload"] and "<MsgType>" in error["payload"]


def test_unknown_sources_are_not_recorded(client, app):
    assert client.post("/connectors/pos/src_missing/transactions", data=b"{}").status_code == 404


def test_health_shows_pull_cursors(app):
    with app.app_context():
        source, _ = create_source(
            SYSTEM, "OA", "wechat", {"app_id": "wx1", "token": "abc", "app_secret": "s"}
        )
        db.session.add(
            ConnectorCursor(
                source_id=source.id,
                name="followers",
                status="paused",
                position={"page_openid": OPENID, "offset": 200, "done": 10200},
                last_error="errcode 45009",
            )
        )
        db.session.commit()
        [cursor] = source_health(source.id)["cursors"]
    assert cursor["status"] == "paused" and cursor["position"]["done"] == 10200
    assert cursor["position"]["page_openid"] != OPENID


def test_every_kind_prints_its_endpoint_urls(runner, app):
    kinds = {
        "wechat": ["app_id=wx0123456789abcdef", "token=abc123"],
        "miniprogram": ["app_id=wx7e6f5a4b3c2d1e0f", "app_secret=s"],
        "pos": ["partner=chain1", "secret=0123456789abcdef"],
        "ecommerce": ["platform=youzan", "secret=12345678"],
    }
    expected = {
        "wechat": {"push"},
        "miniprogram": {"login", "events", "phone"},
        "pos": {"transactions"},
        "ecommerce": {"push"},
    }
    for kind, options in kinds.items():
        args = ["sources", "create", "--name", kind, "--kind", kind, "--json"]
        for option in options:
            args += ["--option", option]
        result = runner.invoke(args=args)
        assert result.exit_code == 0, result.output
        out = json.loads(result.output.strip().splitlines()[-1])
        assert set(out["urls"]) == expected[kind]
        assert all(f"/connectors/{kind}/{out['id']}" in url for url in out["urls"].values())
    with app.app_context():
        pos_source = db.session.scalar(sa.select(Source).where(Source.kind == "pos"))
        from cdp.sources import masked_options

        assert masked_options(pos_source)["secret"] == "--------"


def test_connectors_cli_health_and_sync_errors(runner, app):
    source_id = make_source(app)
    result = runner.invoke(args=["connectors", "health", source_id])
    assert result.exit_code == 0 and json.loads(result.output)["kind"] == "wechat"
    pos_id = None
    with app.app_context():
        source, _ = create_source(
            SYSTEM, "POS", "pos", {"partner": "c", "secret": "0123456789abcdef"}
        )
        pos_id = source.id
    result = runner.invoke(args=["connectors", "sync", pos_id])
    assert result.exit_code != 0 and "pushed to" in result.output


def test_parsers_for_the_demo_seed():
    [click] = wechat.parse_message(event_xml("CLICK", EventKey="MENU_1"), "wx1")
    assert click["event"] == "menu_click"
    [event] = miniprogram.parse_events([{"event": "page_view", "messageId": "1"}], "wx2", "oMP")
    assert event["context"]["externalIds"] == [
        {"type": "miniprogram_openid", "id": "oMP", "collection": "wx2"}
    ]
    txn = {"txn_no": "T1", "store_code": "S1", "txn_time": "2025-01-01T09:00:00",
           "member": {"card_no": "C1"}, "lines": [{"drug_code": "D001", "name": "x", "qty": 1,
                                                   "unit_price": 9.5, "days_of_supply": 30}]}  # fmt: skip
    [purchase] = pos.parse_payload({"transactions": [txn]}, "chain1")
    assert purchase["traits"] == {"refill_run_out_D001": "2025-01-31"}
    assert ecommerce.parse_youzan({"type": "trade_TradeSuccess", "msg": "", "id": "E1"}) == []
    [order] = ecommerce_pull.parse_orders(
        [{"orderId": "9", "orderState": "FINISHED_L", "pin": "jd_buyer", "orderPayment": "10"}],
        "jd",
    )
    assert order["event"] == "order_completed" and order["messageId"] == "jd:9:order_completed"


def test_concurrent_requests_are_committed_together(app):
    """Group commit: ten threads' pushes, one ingest call or a few, every answer after commit."""
    source_id = make_source(app)
    calls = []
    gate = threading.Event()
    real = base.ingest

    def slow_ingest(source, messages, received_at=None, **options):
        calls.append(len(messages))
        gate.wait(2)  # hold the first batch so the others queue up behind it
        return real(source, messages, received_at, **options)

    base.ingest = slow_ingest
    results = []
    try:

        def one(n):
            with app.app_context():
                source = db.session.get(Source, source_id)
                db.session.expunge(source)
                message = {"type": "track", "event": "e", "messageId": f"g{n}",
                           "context": {"externalIds": [{"type": "anonymous_id", "id": f"a{n}"}]}}  # fmt: skip
                results.append(batcher.submit(source, [message]))

        threads = [threading.Thread(target=one, args=(n,)) for n in range(10)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while not calls and time.monotonic() < deadline:  # never spin forever on a failure
            time.sleep(0.001)
        for thread in threads:  # give the others time to queue behind the held leader
            thread.join(0.05)
        gate.set()
        for thread in threads:
            thread.join(10)
    finally:
        base.ingest = real
    assert len(results) == 10 and all(r == [] for r in results)
    assert sum(calls) == 10 and len(calls) < 10
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Event)) == 10


def test_one_bad_request_does_not_fail_its_batch_mates(app):
    source_id = make_source(app)
    gate = threading.Event()
    real = base.ingest
    first = []

    def picky(source, messages, received_at=None, **options):
        if not first:
            first.append(1)
            gate.wait(2)
        if any(m["messageId"] == "poison" for m in messages):
            raise RuntimeError("a bug")
        return real(source, messages, received_at, **options)

    base.ingest = picky
    outcomes = {}
    try:

        def one(mid):
            with app.app_context():
                source = db.session.get(Source, source_id)
                db.session.expunge(source)
                message = {"type": "track", "event": "e", "messageId": mid,
                           "context": {"externalIds": [{"type": "anonymous_id", "id": mid}]}}  # fmt: skip
                try:
                    outcomes[mid] = batcher.submit(source, [message])
                except RuntimeError:
                    outcomes[mid] = "failed"

        ids = ["lead", "a", "poison", "b", "c"]
        threads = [threading.Thread(target=one, args=(mid,)) for mid in ids]
        threads[0].start()
        while not first:
            pass
        for thread in threads[1:]:
            thread.start()
        for thread in threads[1:]:
            thread.join(0.05)
        gate.set()
        for thread in threads:
            thread.join(10)
    finally:
        base.ingest = real
    assert outcomes == {"lead": [], "a": [], "poison": "failed", "b": [], "c": []}
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Event)) == 4


def test_demo_wire_builds_provider_payloads_through_the_parsers(app):
    from datetime import UTC, datetime

    from cdp.seed.vocab import DRUG_BY_CODE

    with app.app_context():
        wire = seed_wire.registered()
    at = datetime(2025, 3, 1, 2, 0, tzinfo=UTC)
    follow = wire.wechat_push("wx1", OPENID, "subscribe", at, key="qrscene_HCP_7")
    assert follow["event"] == "subscribe" and follow["properties"]["qr_scene"] == "HCP_7"
    assert follow["context"]["campaign"]["name"] == "HCP_7"
    text = wire.wechat_text("wx1", OPENID, at, 6789, "漏服了怎么办")
    assert text["messageId"] == "wx:msg:6789" and text["properties"]["content"] == "漏服了怎么办"
    statin = DRUG_BY_CODE["D001"]
    sale = wire.pos_sale("chain1", "S1", "T1", at, {"card_no": "C1"}, [(statin, 2)])
    assert (
        sale["event"] == "pos_purchase" and sale["properties"]["items"][0]["days_of_supply"] == 60
    )
    assert sale["traits"] == {"refill_run_out_D001": "2025-04-30"}
    for platform in ("tmall", "jd", "youzan"):
        order = wire.shop_order(platform, "7001", at, "b1", [(statin, 1)], phone="13761234567")
        assert order["event"] == "order_completed" and order["properties"]["total_cny"] == 98.5
        assert order["properties"]["items"][0]["drug_code"] == "D001"
        assert ("phone" in order.get("traits", {})) is (platform == "youzan")  # others mask it
    page = wire.miniprogram_event("wx2", "oMP", {"type": "page", "name": "首页", "messageId": "p1"})
    assert page["type"] == "page"


def test_numeric_and_boolean_options_from_the_cli(runner):
    args = ["sources", "create", "--name", "OA", "--kind", "wechat", "--json",
            "--option", "app_id=wx1", "--option", "token=abc", "--option", "sync_followers=false",
            "--option", "sync_interval_hours=12", "--option", "rate_per_second=2.5"]  # fmt: skip
    assert runner.invoke(args=args).exit_code == 0
    bad = [*args[:-2], "--option", "rate_per_second=fast"]
    result = runner.invoke(args=bad)
    assert result.exit_code != 0 and "rate_per_second" in result.output
