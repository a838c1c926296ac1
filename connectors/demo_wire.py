"""Provider payloads for ``cdp seed-demo``, run through the connectors' own parsers.

``cdp`` may not import ``connectors``, so ``channels.init_app`` registers this module with
``cdp.seed.wire`` (the ``DemoWire`` protocol). The seed decides who does what and when; each
function here writes it down as the provider would send it (WeChat XML push, POS JSON body,
Youzan push, Tmall/JD order export, mini-program upload), parses that with the endpoint's
parser and returns the canonical message (None when the parser drops it). The seed then
prepares and stores it in bulk like ingestion does, keeping its own profile ids.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from urllib.parse import quote
from zoneinfo import ZoneInfo

import orjson

from cdp.seed.vocab import Drug
from connectors import ecommerce, ecommerce_pull, miniprogram, pos, wechat

TZ = ZoneInfo("Asia/Shanghai")
OA_ID = "gh_5d3c2b1a0f9e"  # the official account's original id, ToUserName of every push
# Seed names of WeChat pushes -> the Event of the push that carries them.
WECHAT_PUSHES = {
    "subscribe": "subscribe",
    "unsubscribe": "unsubscribe",
    "qr_scan": "SCAN",
    "menu_click": "CLICK",
    "menu_view": "VIEW",
}


def _cdata(name: str, value: str) -> str:
    return f"<{name}><![CDATA[{value}]]></{name}>"


def _push(openid: str, at: datetime, msg_type: str, fields: str) -> str:
    return (
        f"<xml>{_cdata('ToUserName', OA_ID)}{_cdata('FromUserName', openid)}"
        f"<CreateTime>{int(at.timestamp())}</CreateTime>{_cdata('MsgType', msg_type)}{fields}</xml>"
    )


def wechat_push(app_id: str, openid: str, event: str, at: datetime, key: str = "") -> dict | None:
    """An OA event push (``subscribe``, ``qr_scan``, ``menu_click``…) as XML, parsed.

    ``key`` is the EventKey: ``qrscene_<scene>`` on a follow from a QR code, the menu key
    of a CLICK, the URL of a VIEW.
    """
    fields = _cdata("Event", WECHAT_PUSHES[event])
    if key:
        fields += _cdata("EventKey", key)
        if key.startswith("qrscene_") or event == "qr_scan":
            ticket = hashlib.sha1(f"{openid}:{key}".encode()).hexdigest()[:24]
            fields += _cdata("Ticket", "gQ" + ticket)
    messages = wechat.parse_message(_push(openid, at, "event", fields), app_id)
    return messages[0] if messages else None


def wechat_text(app_id: str, openid: str, at: datetime, msg_id: int, text: str) -> dict:
    """A follower's text message to the OA as XML, parsed (``message_received``)."""
    fields = _cdata("Content", text) + f"<MsgId>{msg_id}</MsgId>"
    return wechat.parse_message(_push(openid, at, "text", fields), app_id)[0]


def miniprogram_event(app_id: str, openid: str, event: dict, unionid: str | None = None) -> dict:
    """One mini-program upload event (``{"type", "event"/"name", "properties", "timestamp",
    "messageId"}``), with the identity a login session would give it."""
    body = orjson.loads(orjson.dumps({"events": [event]}))
    return miniprogram.parse_events(body["events"], app_id, openid, unionid)[0]


def _money(value: float) -> str:
    return f"{value:.2f}"


def pos_sale(
    partner: str,
    store_code: str,
    txn_no: str,
    at: datetime,
    member: dict,
    lines: Sequence[tuple[Drug, int]],
) -> dict | None:
    """A POS sale upload (the JSON body of ``/connectors/pos/<id>/transactions``), parsed.

    ``days_of_supply`` on the wire is per pack, so the parser's refill forecast
    (``refill_run_out_<code>``) is the purchase date + packs × days.
    """
    wire_lines = [
        {
            "line_no": n,
            "drug_code": drug.code,
            "name": drug.name,
            "qty": qty,
            "unit": "盒",
            "unit_price": drug.price_cny,
            "amount": round(drug.price_cny * qty, 2),
            "days_of_supply": drug.days_of_supply,
            "rx": drug.rx,
            **({"prescription_id": f"RX{txn_no}"} if drug.rx else {}),
        }
        for n, (drug, qty) in enumerate(lines, start=1)
    ]
    txn = {
        "txn_no": txn_no,
        "type": "sale",
        "store_code": store_code,
        "txn_time": at.astimezone(TZ).isoformat(),
        "member": member,
        "lines": wire_lines,
        "total_amount": round(sum(line["amount"] for line in wire_lines), 2),
    }
    body = orjson.loads(orjson.dumps({"transactions": [txn]}))
    messages = pos.parse_payload(body, partner)
    return messages[0] if messages else None


def _local(at: datetime) -> str:
    return at.astimezone(TZ).strftime("%Y-%m-%d %H:%M:%S")


def _tmall(order_id: str, at: datetime, buyer: str, lines) -> dict:
    orders = [
        {
            "oid": f"{order_id}{n}",
            "outer_sku_id": drug.code,
            "title": drug.name,
            "num": qty,
            "price": _money(drug.price_cny),
            "payment": _money(drug.price_cny * qty),
        }
        for n, (drug, qty) in enumerate(lines, start=1)
    ]
    total = sum(drug.price_cny * qty for drug, qty in lines)
    return {
        "tid": int(order_id),
        "status": "TRADE_FINISHED",
        "payment": _money(total),
        "buyer_open_uid": buyer,
        "modified": _local(at),
        "orders": {"order": orders},
    }


def _jd(order_id: str, at: datetime, buyer: str, lines) -> dict:
    items = [
        {
            "outerSkuId": drug.code,
            "skuName": drug.name,
            "itemTotal": str(qty),
            "jdPrice": _money(drug.price_cny),
        }
        for drug, qty in lines
    ]
    total = sum(drug.price_cny * qty for drug, qty in lines)
    return {
        "orderId": order_id,
        "orderState": "FINISHED_L",
        "orderPayment": _money(total),
        "open_id_buyer": buyer,
        "modified": _local(at),
        "itemInfoList": items,
    }


def _youzan(order_id: str, at: datetime, buyer: str, lines, phone: str | None) -> dict:
    """A Youzan ``trade_TradeSuccess`` push: the order in ``msg``, URL-encoded JSON."""
    orders = [
        {
            "outer_sku_id": drug.code,
            "title": drug.name,
            "num": qty,
            "price": _money(drug.price_cny),
            "payment": _money(drug.price_cny * qty),
        }
        for drug, qty in lines
    ]
    total = _money(sum(drug.price_cny * qty for drug, qty in lines))
    buyer_info = {"yz_open_id": buyer, **({"buyer_phone": phone} if phone else {})}
    info = {
        "order_info": {"tid": order_id, "update_time": _local(at), "status": "TRADE_SUCCESS"},
        "buyer_info": buyer_info,
        "pay_info": {"payment": total},
        "orders": orders,
    }
    msg = quote(orjson.dumps({"full_order_info": info}).decode())
    return {"type": "trade_TradeSuccess", "id": order_id, "kdt_id": 1000086, "msg": msg}


def shop_order(
    platform: str,
    order_id: str,
    at: datetime,
    buyer: str,
    lines: Sequence[tuple[Drug, int]],
    phone: str | None = None,
) -> dict | None:
    """A finished order: a Youzan push, or a Tmall trade / JD order from the order export.

    ``phone`` (mainland digits) only reaches a Youzan push; Tmall and JD mask it.
    """
    if platform == "youzan":
        body = orjson.loads(orjson.dumps(_youzan(order_id, at, buyer, lines, phone)))
        messages = ecommerce.parse_youzan(body, platform)
    else:
        build = _jd if platform == "jd" else _tmall
        page = orjson.loads(orjson.dumps([build(order_id, at, buyer, lines)]))
        messages = ecommerce_pull.parse_orders(page, platform)
    return messages[0] if messages else None
