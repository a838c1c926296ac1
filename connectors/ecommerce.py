"""E-commerce shops: Youzan-style push webhooks (this module) and JD/Tmall-style order export
pulls (``ecommerce_pull``), both → ``order_*`` events on ``ecommerce_buyer:<platform>``.

``POST /connectors/ecommerce/<source_id>/push`` speaks Youzan's push: headers
``Event-Sign = md5(client_id + raw body + secret)`` (lowercase hex), ``Event-Type``,
``Client-Id``; a JSON body whose ``msg`` is URL-encoded JSON (or, for the newer refund
messages, an object). Trade messages become ``order_created``, ``order_paid``,
``order_shipped``, ``order_completed``, ``order_closed``; refunds ``refund_requested``,
``refund_agreed``, ``order_refunded``, ``refund_closed``; customer messages an ``identify``
(phone when present). The dedupe key is the platform, order and event (Youzan sends
several messages that mean the same status, and retries with new ``sendCount``).
The answer is ``{"code": 0, "msg": "success"}``, as Youzan expects, after the commit.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from datetime import datetime
from urllib.parse import unquote
from zoneinfo import ZoneInfo

import orjson
from flask import Blueprint, Response, g, request
from werkzeug.exceptions import BadRequest, Forbidden

from cdp.db import utcnow
from cdp.models import Source
from cdp.sources import SourceKind
from connectors.base import (
    connector_source,
    external_id,
    ingest_messages,
    int_option,
    message_id,
    record_failures,
)
from connectors.http_body import KB, http_error, parse_json, read_body, require_object
from connectors.wechat import API_BASE
from web.extensions import csrf

KIND = "ecommerce"
MAX_BODY = 512 * KB
TZ = ZoneInfo("Asia/Shanghai")
PLATFORMS = ("youzan", "tmall", "taobao", "jd", "other")
TRADE_EVENTS = {
    "trade_TradeCreate": "order_created",
    "trade_TradePaid": "order_paid",
    "trade_TradeBuyerPay": "order_paid",
    "trade_TradeSellerShip": "order_shipped",
    "trade_TradeSuccess": "order_completed",
    "trade_TradeClose": "order_closed",
}
REFUND_EVENTS = {
    "BuyerCreated": "refund_requested",
    "RefundCreated": "refund_requested",
    "RefundSellerAgree": "refund_agreed",
    "RefundSuccess": "order_refunded",
    "SysRefund": "order_refunded",
    "RefundClosed": "refund_closed",
}
_MOBILE = re.compile(r"^(?:\+?86)?1[3-9]\d{9}$")

bp = Blueprint("connector_ecommerce", __name__, url_prefix="/connectors/ecommerce")
csrf.exempt(bp)
record_failures(bp)


class EcommerceSourceKind(SourceKind):
    name = KIND
    label = "E-commerce shop (Youzan push, JD / Tmall order export)"
    options_schema = {
        "type": "object",
        "required": ["platform", "secret"],
        "properties": {
            "platform": {"enum": list(PLATFORMS)},
            "secret": {"type": "string", "minLength": 8, "maxLength": 256},
            "api_base": API_BASE,
            "client_id": {"type": "string", "maxLength": 64},  # Youzan push
            "app_key": {"type": "string", "maxLength": 64},  # JD / Tmall pull
            "access_token": {"type": "string", "maxLength": 256},  # JD token / TOP session
            "pull_start": {"type": "string", "format": "date-time"},
            "pull_window_minutes": int_option(1, 1440),
            "pull_interval_minutes": int_option(1, 1440),
        },
        "additionalProperties": False,
    }
    secret_options = ("secret", "access_token")

    def endpoint_urls(self, base_url: str, source: Source) -> dict[str, str]:
        return {"push": f"{base_url}/connectors/ecommerce/{source.id}/push"}


def youzan_sign(client_id: str, body: bytes, secret: str) -> str:
    return hashlib.md5(client_id.encode() + body + secret.encode()).hexdigest()


def local_time(value) -> str | None:
    """A shop time ("2025-03-01 10:15:00", Beijing time, or Unix seconds) as ISO 8601."""
    if value in (None, ""):
        return None
    if isinstance(value, int | float) or str(value).isdigit():
        seconds = int(value) / (1000 if int(value) > 10**11 else 1)
        return datetime.fromtimestamp(seconds, TZ).isoformat()
    try:
        parsed = datetime.fromisoformat(str(value).replace("/", "-"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=TZ)).isoformat()


def _money(value) -> float | None:
    try:
        return round(float(value), 2)
    except (TypeError, ValueError):
        return None


def _buyer(platform: str, buyer_id, phone) -> tuple[list, dict]:
    ids = [external_id("ecommerce_buyer", buyer_id, platform)] if buyer_id else []
    traits = {}
    if phone and _MOBILE.match(str(phone)):  # platforms mask phones (138****0000): skip those
        traits["phone"] = str(phone)
    return ids, traits


def order_message(platform, order_id, name, at, items, total, buyer_id, phone, extra=None):
    """A canonical order event; None when the order names no buyer we can attach it to."""
    ids, traits = _buyer(platform, buyer_id, phone)
    if not ids and not traits:
        return None
    props = {
        "channel": "ecommerce",
        "platform": platform,
        "order_id": str(order_id),
        "items": items,
        **(extra or {}),
    }
    if total is not None:
        props["total_cny"] = total
    message = {
        "type": "track",
        "event": name,
        "messageId": message_id(platform, order_id, name),
        "properties": props,
        "context": {"externalIds": ids, "channel": "ecommerce"},
    }
    if at:
        message["timestamp"] = at
    if traits:
        message["traits"] = traits
    return message


def _youzan_msg(body: dict):
    msg = body.get("msg")
    if isinstance(msg, dict):
        return msg
    if isinstance(msg, str) and msg:
        try:
            return json.loads(unquote(msg))
        except ValueError:
            raise http_error(BadRequest, "msg is not URL-encoded JSON", field="msg") from None
    return {}


def _youzan_trade(name: str, body: dict, msg: dict, platform: str):
    info = msg.get("full_order_info") or msg
    order = info.get("order_info") or {}
    buyer = info.get("buyer_info") or {}
    pay = info.get("pay_info") or {}
    items = [
        {
            "drug_code": str(
                o.get("outer_sku_id") or o.get("outer_item_id") or o.get("item_id") or ""
            ),
            "sku_id": str(o.get("sku_id") or ""),
            "name": str(o.get("title") or "")[:200],
            "qty": int(o.get("num") or 1),
            "unit_price": _money(o.get("price")),
            "amount": _money(o.get("payment")),
        }
        for o in info.get("orders") or []
        if isinstance(o, dict)
    ]
    order_id = order.get("tid") or msg.get("tid") or body.get("id")
    at = local_time(
        order.get("update_time")
        or order.get("pay_time")
        or order.get("created")
        or msg.get("update_time")
    )
    buyer_id = (
        buyer.get("yz_open_id")
        or buyer.get("outer_user_id")
        or buyer.get("fans_id")
        or buyer.get("buyer_id")
    )
    total = _money(pay.get("payment") or order.get("payment"))
    extra = {"shop_id": str(body.get("kdt_id") or ""), "status": str(body.get("status") or "")}
    return order_message(
        platform, order_id, name, at, items, total, buyer_id, buyer.get("buyer_phone"), extra
    )


def _youzan_refund(name: str, body: dict, msg: dict, platform: str):
    order_id = msg.get("tid") or body.get("id")
    refund_id = msg.get("refund_id") or msg.get("oid") or ""
    extra = {
        "refund_id": str(refund_id),
        "refund_type": str(msg.get("refund_type") or ""),
        "refund_cny": _money(msg.get("refunded_fee") or msg.get("refund_fee")),
        "reason": str(msg.get("refund_reason") or msg.get("reason") or "")[:200],
    }
    buyer_id = msg.get("yz_open_id") or msg.get("buyer_id") or msg.get("fans_id")
    at = local_time(msg.get("update_time") or msg.get("created")) or None
    message = order_message(platform, order_id, name, at, [], None, buyer_id, None, extra)
    if message:
        message["messageId"] = message_id(platform, order_id, name, refund_id)
    return message


def _youzan_customer(body: dict, msg: dict, platform: str):
    buyer_id = msg.get("yz_open_id") or msg.get("account_id") or msg.get("user_id")
    ids, traits = _buyer(platform, buyer_id, msg.get("mobile"))
    if not ids and not traits:
        return None
    traits["ecommerce_member"] = bool(msg.get("is_member"))
    return {
        "type": "identify",
        "messageId": message_id(
            platform,
            "customer",
            buyer_id or msg.get("mobile"),
            body.get("version") or body.get("msg_id"),
        ),
        "traits": traits,
        "context": {"externalIds": ids, "channel": "ecommerce"},
    }


def parse_youzan(body: dict, platform: str = "youzan") -> list[dict]:
    """Canonical messages of one Youzan push body (``[]`` for tests and ignorable types)."""
    if body.get("test") is True:
        return []
    kind = str(body.get("type") or "")
    msg = _youzan_msg(body)
    if kind in TRADE_EVENTS:
        message = _youzan_trade(TRADE_EVENTS[kind], body, msg, platform)
    elif "refund" in kind.lower():
        suffix = kind.rsplit("_", 1)[-1]
        name = REFUND_EVENTS.get(suffix) or REFUND_EVENTS.get(
            suffix.replace("Refund", ""), "refund_updated"
        )
        message = _youzan_refund(name, body, msg, platform)
    elif kind == "SCRM_CUSTOMER_EVENT":
        message = _youzan_customer(body, msg, platform)
    else:
        return []  # points echoes and other topics carry nothing for the profile
    return [message] if message else []


@bp.post("/<source_id>/push")
def push(source_id: str):
    received_at = utcnow()
    source, options = connector_source(source_id, KIND)
    raw = read_body(MAX_BODY, what="the push body")
    g.connector_payload = raw
    client_id = request.headers.get("Client-Id", "")
    if options.get("client_id") and client_id != options["client_id"]:
        raise http_error(Forbidden, "Client-Id is not this shop's client id")
    expected = youzan_sign(options.get("client_id") or client_id, raw, options["secret"])
    if not hmac.compare_digest(expected, request.headers.get("Event-Sign", "").strip().lower()):
        raise http_error(Forbidden, "Event-Sign does not match md5(client_id + body + secret)")
    body = require_object(parse_json(raw))
    messages = parse_youzan(body, options.get("platform") or "youzan")
    if messages:
        ingest_messages(source, messages, received_at)
    g.connector_payload = None
    return Response(orjson.dumps({"code": 0, "msg": "success"}), mimetype="application/json")
