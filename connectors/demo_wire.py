"""Wire payloads for ``cdp seed-demo``, run through the real parsers.

``cdp`` may not import ``connectors``, so ``channels.init_app`` puts this module in
``app.extensions["connectors.demo_wire"]``; the seed asks for it there and, when present,
builds each channel event as the provider would send it (WeChat XML push, POS
transaction, Youzan/Tmall order, mini-program upload) and stores what the parser makes of
it. Each function returns one canonical message (or None when the parser drops it); the
seed keeps its own profile ids and bulk insert and takes ``event_row(message)``.
"""

from __future__ import annotations

from datetime import datetime

from connectors import ecommerce_pull, miniprogram, pos, wechat

# Seed names of WeChat pushes -> (MsgType, Event) of the push that carries them.
WECHAT_PUSHES = {
    "subscribe": "subscribe",
    "unsubscribe": "unsubscribe",
    "qr_scan": "SCAN",
    "menu_click": "CLICK",
    "menu_view": "VIEW",
}


def wechat_push(app_id: str, openid: str, event: str, at: datetime, key: str = "") -> dict | None:
    """An OA push (``subscribe``, ``qr_scan``, ``menu_click``…) as XML, parsed."""
    name = WECHAT_PUSHES[event]
    fields = f"<EventKey><![CDATA[{key}]]></EventKey>" if key else ""
    xml = (
        f"<xml><ToUserName><![CDATA[gh_demo]]></ToUserName><FromUserName><![CDATA[{openid}]]>"
        f"</FromUserName><CreateTime>{int(at.timestamp())}</CreateTime><MsgType><![CDATA[event]]>"
        f"</MsgType><Event><![CDATA[{name}]]></Event>{fields}</xml>"
    )
    messages = wechat.parse_message(xml, app_id)
    return messages[0] if messages else None


def miniprogram_event(app_id: str, openid: str, event: dict, unionid: str | None = None) -> dict:
    """One mini-program upload event (``{"type", "event"/"name", "properties", "timestamp",
    "messageId"}``), with the identity a login session would give it."""
    return miniprogram.parse_events([event], app_id, openid, unionid)[0]


def pos_sale(partner: str, transaction: dict) -> dict | None:
    """One POS transaction in the wire format of ``connectors.pos_parse``, parsed."""
    messages = pos.parse_payload({"transactions": [transaction]}, partner)
    return messages[0] if messages else None


def shop_order(platform: str, order: dict) -> dict | None:
    """One exported order (Tmall trade or JD order dict), parsed."""
    messages = ecommerce_pull.parse_orders([order], platform)
    return messages[0] if messages else None


def event_row(message: dict) -> dict:
    """The event-row fields of a canonical message (the seed adds source, profile, arrival)."""
    return {
        "message_id": message["messageId"],
        "type": message["type"],
        "name": message.get("event") or message.get("name"),
        "timestamp": datetime.fromisoformat(message["timestamp"]),
        "properties": message.get("properties") or {},
        "context": {k: v for k, v in (message.get("context") or {}).items() if k != "externalIds"},
        "traits": message.get("traits") or {},
    }
