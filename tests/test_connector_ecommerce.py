"""E-commerce: Youzan-style signed pushes, and JD / Tmall-style order export pulls against
stub servers (windows, pages, resumable cursor, rate limits, 5xx)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import orjson
import pytest
import sqlalchemy as sa
from werkzeug import Response

from cdp.actors import SYSTEM
from cdp.db import db
from cdp.models import Event, Identity
from cdp.sources import create_source
from connectors import ecommerce_pull
from connectors.ecommerce import parse_youzan, youzan_sign
from connectors.models import ConnectorCursor

CLIENT_ID = "yz-client-1"
SECRET = "yz-secret-123456"


def stored(app, source_id) -> list[Event]:
    with app.app_context():
        query = sa.select(Event).where(Event.source_id == source_id).order_by(Event.id)
        return list(db.session.scalars(query))


# --- Youzan push --------------------------------------------------------------------------


@pytest.fixture
def shop(app) -> str:
    options = {"platform": "youzan", "secret": SECRET, "client_id": CLIENT_ID}
    with app.app_context():
        source, _ = create_source(SYSTEM, "Youzan shop", "ecommerce", options)
        return source.id


def trade_msg(status="TRADE_PAID", tid="E20250301101500001") -> str:
    full = {
        "full_order_info": {
            "order_info": {"tid": tid, "status": status, "created": "2025-03-01 10:15:00",
                           "pay_time": "2025-03-01 10:16:00", "update_time": "2025-03-01 10:16:00"},
            "buyer_info": {"yz_open_id": "yzOpen123", "buyer_phone": "13761234567", "fans_id": 0},
            "pay_info": {"payment": "187.00", "total_fee": "197.00", "post_fee": "0.00"},
            "orders": [{"title": "阿托伐他汀钙片", "num": 2, "price": "98.50", "payment": "187.00",
                        "outer_sku_id": "86900001000015", "sku_id": 1001, "item_id": 77}],
        }
    }  # fmt: skip
    return quote(json.dumps(full, ensure_ascii=False))


def push_body(kind="trade_TradePaid", msg=None, msg_id="m-1", **extra) -> dict:
    body = {"client_id": CLIENT_ID, "kdt_id": 56232, "kdt_name": "康护大药房", "id": "E20250301101500001",
            "type": kind, "status": "WAIT_SELLER_SEND_GOODS", "msg": msg if msg is not None else trade_msg(),
            "msg_id": msg_id, "version": 1621946649, "sendCount": 1, "test": False, "mode": 1}  # fmt: skip
    body.update(extra)
    return body


def push(client, shop, body, secret=SECRET, raw=None):
    data = raw if raw is not None else orjson.dumps(body)
    headers = {
        "Event-Sign": youzan_sign(CLIENT_ID, data, secret),
        "Event-Type": body.get("type", "") if isinstance(body, dict) else "",
        "Client-Id": CLIENT_ID,
        "Content-Type": "application/json",
    }
    return client.post(f"/connectors/ecommerce/{shop}/push", data=data, headers=headers)


def test_signed_trade_pushes_become_order_events(client, app, shop):
    response = push(client, shop, push_body())
    assert response.status_code == 200 and response.get_json() == {"code": 0, "msg": "success"}
    # Youzan retries with a new sendCount, and sends BuyerPay for the same status: deduped.
    push(client, shop, push_body(sendCount=2))
    push(client, shop, push_body(kind="trade_TradeBuyerPay", msg_id="m-2"))
    push(
        client,
        shop,
        push_body(kind="trade_TradeSuccess", msg=trade_msg("TRADE_SUCCESS"), msg_id="m-3"),
    )
    paid, completed = stored(app, shop)
    assert paid.name == "order_paid" and completed.name == "order_completed"
    assert paid.message_id == "youzan:E20250301101500001:order_paid"
    assert paid.properties["total_cny"] == 187.0
    assert paid.properties["items"][0]["drug_code"] == "86900001000015"
    assert paid.timestamp == datetime(2025, 3, 1, 2, 16, tzinfo=UTC)  # Beijing time → UTC
    with app.app_context():
        idents = {(i.type, i.namespace) for i in db.session.scalars(sa.select(Identity))}
    assert idents == {("ecommerce_buyer", "youzan"), ("phone", "")}


def test_refunds_test_messages_and_masked_phones():
    refund = {"tid": "E1", "refund_id": "R9", "refunded_fee": "98.50", "refund_type": "REFUND_ONLY",
              "yz_open_id": "yzOpen123", "update_time": "2025-03-03 09:00:00"}  # fmt: skip
    [message] = parse_youzan(push_body(kind="youzan_trade_RefundSuccess", msg=refund))
    assert message["event"] == "order_refunded" and message["properties"]["refund_cny"] == 98.5
    assert parse_youzan(push_body(test=True)) == []
    masked = trade_msg().replace("13761234567", "137****4567")
    [message] = parse_youzan(push_body(msg=masked))
    assert "traits" not in message  # a masked phone links nobody


def test_push_refusals(client, app, shop):
    assert push(client, shop, push_body(), secret="wrong").status_code == 403
    bad_json = b"{nope"
    assert push(client, shop, {}, raw=bad_json).status_code == 400
    assert push(client, shop, push_body(msg="%7Bnot-json")).status_code == 400
    huge = orjson.dumps(push_body(padding="x" * 600_000))
    assert push(client, shop, {}, raw=huge).status_code == 413
    assert stored(app, shop) == []


# --- JD / Tmall pull ----------------------------------------------------------------------


NOW = datetime.now(UTC)


class Shop:
    """Orders modified over the last 3 hours, served like TOP / JOS with scripted failures."""

    def __init__(self, platform: str, orders=23):
        self.platform = platform
        self.orders = [
            {"id": 1000 + n, "at": NOW - timedelta(minutes=170 - n * 7), "buyer": f"buyer{n % 5}"}
            for n in range(orders)
        ]
        self.fail: list = []
        self.calls: list[tuple[str, str, int]] = []

    def handle(self, request):
        form = request.form
        if self.fail:
            what = self.fail.pop(0)
            if what == 503:
                return Response("busy", status=503)
            return Response(json.dumps({"error_response": what}), content_type="application/json")
        if self.platform == "jd":
            query = json.loads(form["360buy_param_json"])
            start, end, page = query["start_date"], query["end_date"], int(query["page"])
        else:
            start, end, page = form["start_modified"], form["end_modified"], int(form["page_no"])
        self.calls.append((start, end, page))
        size = ecommerce_pull.PAGE_SIZE
        local = ecommerce_pull._stamp
        hits = [o for o in self.orders if start <= local(o["at"]) < end]
        chunk = hits[(page - 1) * size : page * size]
        if self.platform == "jd":
            orders = [{"orderId": str(o["id"]), "orderState": "FINISHED_L", "orderPayment": "59.90",
                       "modified": local(o["at"]), "pin": o["buyer"],
                       "itemInfoList": [{"skuId": "1", "outerSkuId": "D008", "skuName": "二甲双胍",
                                         "jdPrice": "29.95", "itemTotal": "2"}]} for o in chunk]  # fmt: skip
            body = {"jingdong_pop_order_search_responce": {"searchorderinfo_result": {
                "orderInfoList": orders, "orderTotal": len(hits), "apiResult": {"success": True}}}}  # fmt: skip
        else:
            trades = [{"tid": o["id"], "status": "TRADE_FINISHED", "payment": "59.90",
                       "modified": local(o["at"]), "buyer_open_uid": o["buyer"],
                       "orders": {"order": [{"oid": 1, "title": "二甲双胍", "num": 2, "price": "29.95",
                                             "payment": "59.90", "outer_sku_id": "D008"}]}}
                      for o in chunk]  # fmt: skip
            body = {"trades_sold_increment_get_response": {
                "trades": {"trade": trades}, "has_next": page * size < len(hits)}}  # fmt: skip
        return Response(json.dumps(body), content_type="application/json")


@pytest.fixture(params=["tmall", "jd"])
def pull(request, app, httpserver, monkeypatch):
    stub = Shop(request.param)
    path = "/routerjson" if request.param == "jd" else "/router/rest"
    httpserver.expect_request(path, method="POST").respond_with_handler(lambda r: stub.handle(r))
    monkeypatch.setattr(ecommerce_pull, "PAGE_SIZE", 4)
    monkeypatch.setattr(
        ecommerce_pull,
        "api_factory",
        lambda options: ecommerce_pull.Api(options, sleep=lambda s: None, timeout=2),
    )
    options = {
        "platform": request.param,
        "secret": "shop-secret-1",
        "app_key": "k1",
        "access_token": "session-1",
        "api_base": httpserver.url_for("").rstrip("/"),
        "pull_start": (NOW - timedelta(hours=3)).isoformat(),
        "pull_window_minutes": 60,
    }
    with app.app_context():
        source, _ = create_source(SYSTEM, "Shop", "ecommerce", options)
        stub.source_id = source.id
    return stub


def run_pull(app, source_id) -> dict:
    with app.app_context():
        job = ecommerce_pull.start_order_pull(SYSTEM, source_id)
        return ecommerce_pull.pull_orders(source_id, job.id)


def test_pull_walks_windows_and_pages_and_is_idempotent(app, pull):
    result = run_pull(app, pull.source_id)
    assert result["status"] == "done" and result["orders"] == 23
    events = stored(app, pull.source_id)
    assert len(events) == 23 and {e.name for e in events} == {"order_completed"}
    assert events[0].properties["items"][0]["drug_code"] == "D008"
    windows = {(start, end) for start, end, _ in pull.calls}
    assert len(windows) == 3  # three one-hour windows up to five minutes ago
    assert max(page for *_, page in pull.calls) == 2  # windows with more than one page
    with app.app_context():
        buyers = db.session.scalars(sa.select(Identity).where(Identity.type == "ecommerce_buyer"))
        assert {b.namespace for b in buyers} == {pull.platform}
    # Running again reads nothing new: the cursor is at now − 5 minutes.
    pull.calls.clear()
    again = run_pull(app, pull.source_id)
    assert again["orders"] == 0 and len(stored(app, pull.source_id)) == 23


def test_failed_page_resumes_from_the_cursor(app, pull):
    calls_before_failure = 3  # window 1 (two pages) and page 1 of window 2, then down
    original = pull.handle
    count = {"n": 0}

    def flaky(request):
        count["n"] += 1
        if count["n"] > calls_before_failure:
            return Response("down", status=503)
        return original(request)

    pull.handle = flaky
    result = run_pull(app, pull.source_id)
    assert result["status"] == "failed"
    with app.app_context():
        cursor = db.session.get(ConnectorCursor, (pull.source_id, "orders"))
        position, status = dict(cursor.position), cursor.status
    assert status == "failed" and position["window_start"]
    done_calls = list(pull.calls)
    pull.handle = original
    pull.calls.clear()
    result = run_pull(app, pull.source_id)
    assert result["status"] == "done"
    resumed_at = ecommerce_pull._stamp(datetime.fromisoformat(position["window_start"]))
    assert (pull.calls[0][0], pull.calls[0][2]) == (resumed_at, position["page"])
    assert position["page"] == 2 and pull.calls[0][0] == done_calls[-1][0]  # mid-window
    assert len(stored(app, pull.source_id)) == 23


def test_rate_limit_pauses_and_5xx_is_retried(app, pull):
    pull.fail = [503, 503]
    if pull.platform == "jd":
        limited = {"code": "67", "en_desc": "call limit exceeded", "zh_desc": "调用次数超限"}
    else:
        limited = {
            "code": 7,
            "msg": "App Call Limited",
            "sub_code": "accesscontrol.limited-by-app-access-count",
        }
    result = run_pull(app, pull.source_id)
    assert result["status"] == "done"  # two 503s were retried
    pull.orders.append({"id": 9999, "at": NOW - timedelta(minutes=1), "buyer": "late"})
    pull.fail = [limited]
    with app.app_context():
        cursor = db.session.get(ConnectorCursor, (pull.source_id, "orders"))
        cursor.position = {"window_start": (NOW - timedelta(hours=3)).isoformat(), "page": 1}
        db.session.commit()
    result = run_pull(app, pull.source_id)
    assert result["status"] == "paused"
    assert run_pull(app, pull.source_id)["status"] == "done"
