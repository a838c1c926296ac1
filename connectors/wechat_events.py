"""WeChat official-account pushes (already parsed to a dict) → canonical Segment-spec messages.

Classification follows wechatpy's parser: ``MsgType`` and ``Event`` lower-cased; a
``subscribe`` whose ``EventKey`` starts with ``qrscene_`` is a follow from a parametric
QR code (the scene, prefix stripped, is the campaign). Every message is a ``track`` on the
profile of ``wechat_openid:<appid>`` (plus ``wechat_unionid`` when the push carries one).

Dedupe keys (``messageId``), as WeChat's retries repeat them: ``wx:msg:<MsgId>`` for user
messages; ``wx:<openid>:<CreateTime>:<event>[:<key>]`` for events (the event name and key
are added so two different events of one user in the same second do not collide).
"""

from __future__ import annotations

from connectors.base import external_id, iso_from_unix, message_id

MAX_TEXT = 500
# Event name (lower-cased) -> canonical event name, for events with no extra mapping.
SIMPLE_EVENTS = {
    "click": "menu_click",
    "view": "menu_view",
    "view_miniprogram": "menu_view_miniprogram",
    "scancode_push": "menu_scan",
    "scancode_waitmsg": "menu_scan",
    "user_get_card": "card_claimed",
    "user_del_card": "card_deleted",
    "user_consume_card": "card_consumed",
    "user_view_card": "card_viewed",
    "update_member_card": "member_card_updated",
    "submit_membercard_user_info": "member_card_activated",
    "kf_create_session": "service_session_started",
    "kf_close_session": "service_session_closed",
}
# Fields copied into properties (push field -> property), when present.
FIELDS = {
    "EventKey": "event_key",
    "MenuId": "menu_id",
    "CardId": "card_id",
    "UserCardCode": "card_code",
    "OuterStr": "outer_str",
    "ConsumeSource": "consume_source",
    "LocationName": "location_name",
    "IsGiveByFriend": "gift",
    "KfAccount": "kf_account",
}


class PushError(ValueError):
    """A push missing what every WeChat message has; ``str()`` names the field."""


def _text(value, limit: int = 200) -> str:
    return value[:limit] if isinstance(value, str) else ""


def _coarse(value) -> float | None:
    """A coordinate rounded to 0.01° (about 1 km): whereabouts are sensitive under PIPL."""
    try:
        return round(float(value), 2)
    except (TypeError, ValueError):
        return None


def classify(push: dict) -> tuple[str, str]:
    """(msg_type, event) lower-cased, the way wechatpy's parser names them."""
    msg_type = _text(push.get("MsgType")).lower()
    event = ""
    if msg_type == "event":
        event = _text(push.get("Event")).lower()
        key = push.get("EventKey")
        if event == "subscribe" and isinstance(key, str) and key.startswith("qrscene_"):
            event = "subscribe_scan"
    return msg_type, event


def _envelope(push: dict, app_id: str) -> tuple[str, int, dict]:
    openid = push.get("FromUserName")
    if not isinstance(openid, str) or not openid.strip():
        raise PushError("FromUserName (the user's openid) is missing")
    try:
        created = int(push.get("CreateTime"))
    except (TypeError, ValueError):
        raise PushError("CreateTime must be a Unix time in seconds") from None
    if not _text(push.get("MsgType")):
        raise PushError("MsgType is missing")
    ids = [external_id("wechat_openid", openid.strip(), app_id)]
    if isinstance(push.get("UnionId"), str) and push["UnionId"].strip():
        ids.append(external_id("wechat_unionid", push["UnionId"].strip()))
    context = {"externalIds": ids, "channel": "wechat"}
    return openid.strip(), created, context


def _track(name, mid, created, context, properties, app_id, traits=None) -> dict:
    message = {
        "type": "track",
        "event": name,
        "messageId": mid,
        "timestamp": iso_from_unix(created),
        "properties": {"channel": "wechat", "app_id": app_id, **properties},
        "context": context,
    }
    if traits:
        message["traits"] = traits
    return message


def _copied(push: dict) -> dict:
    return {prop: _text(push[field], 1000) for field, prop in FIELDS.items() if push.get(field)}


def _user_message(push, msg_type, app_id, openid, created, context) -> dict:
    msg_id = push.get("MsgId") or push.get("MsgID")
    mid = message_id("wx:msg", msg_id) if msg_id else message_id("wx", openid, created, msg_type)
    props: dict = {"msg_type": msg_type, "msg_id": str(msg_id or "")}
    if msg_type == "text":
        props["content"] = _text(push.get("Content"), MAX_TEXT)
    elif msg_type == "location":
        props.update(
            latitude=_coarse(push.get("Location_X")),
            longitude=_coarse(push.get("Location_Y")),
            scale=_text(push.get("Scale"), 8),
        )
    elif msg_type == "link":
        props.update(title=_text(push.get("Title")), url=_text(push.get("Url"), 1000))
    else:  # image, voice, video, shortvideo: media ids only, the media stays with WeChat
        props.update(media_id=_text(push.get("MediaId")), format=_text(push.get("Format"), 16))
        if push.get("Recognition"):
            props["recognition"] = _text(push.get("Recognition"), MAX_TEXT)
    return _track("message_received", mid, created, context, props, app_id)


def _subscribe_results(push, app_id, openid, created, context) -> list[dict]:
    """OA subscription-message popup/change: one accept/refuse event per template id."""
    items = (push.get("SubscribeMsgPopupEvent") or push.get("SubscribeMsgChangeEvent") or {}).get(
        "List"
    ) or []
    items = items if isinstance(items, list) else [items]
    out = []
    for item in items:
        if not isinstance(item, dict) or not item.get("TemplateId"):
            continue
        template_id = _text(item["TemplateId"], 128)
        accepted = _text(item.get("SubscribeStatusString")).lower() == "accept"
        name = "subscribe_accepted" if accepted else "subscribe_refused"
        mid = message_id("wx", openid, created, push.get("Event"), template_id)
        props = {"template_id": template_id, "popup_scene": _text(item.get("PopupScene"), 16)}
        out.append(_track(name, mid, created, context, props, app_id))
    return out


class _Push:
    """One push being mapped: its fields, app id, user, time, context and dedupe key."""

    def __init__(self, push: dict, app_id: str):
        self.push, self.app_id = push, app_id
        self.openid, self.created, self.context = _envelope(push, app_id)
        self.raw_event = _text(push.get("Event"), 64)
        self.key = _text(push.get("EventKey"), 1000)
        parts = (self.raw_event, self.key) if self.key else (self.raw_event,)
        self.mid = message_id("wx", self.openid, self.created, *parts)

    def track(self, name, props, mid=None, context=None, traits=None) -> list[dict]:
        mid, context = mid or self.mid, context or self.context
        return [_track(name, mid, self.created, context, props, self.app_id, traits)]

    def campaign(self, scene: str) -> dict:
        return {**self.context, "campaign": {"source": "wechat", "medium": "qrcode", "name": scene}}


def _subscribe(p: _Push, event: str) -> list[dict]:
    props, context = _copied(p.push), None
    if event == "subscribe_scan":
        scene = p.key[len("qrscene_") :]
        props.update(qr_scene=scene, ticket=_text(p.push.get("Ticket")))
        context = p.campaign(scene)
    return p.track("subscribe", props, context=context, traits={"wechat_subscribed": True})


def _unsubscribe(p: _Push, event: str) -> list[dict]:
    return p.track("unsubscribe", _copied(p.push), traits={"wechat_subscribed": False})


def _scan(p: _Push, event: str) -> list[dict]:
    props = {**_copied(p.push), "qr_scene": p.key, "ticket": _text(p.push.get("Ticket"))}
    return p.track("qr_scan", props, context=p.campaign(p.key))


def _location(p: _Push, event: str) -> list[dict]:
    lat, lon = _coarse(p.push.get("Latitude")), _coarse(p.push.get("Longitude"))
    return p.track("location_report", {"latitude": lat, "longitude": lon})


def _job_finished(p: _Push, event: str) -> list[dict]:
    msg_id = _text(p.push.get("MsgID") or p.push.get("MsgId"), 64)
    status = _text(p.push.get("Status"), 100)
    props = {"msg_id": msg_id, "status": status, "delivered": status == "success"}
    name = "template_delivery"
    if event == "masssendjobfinish":
        name = "mass_send_finished"
        for field in ("TotalCount", "FilterCount", "SentCount", "ErrorCount"):
            if str(p.push.get(field, "")).isdigit():
                props[field.lower().replace("count", "_count")] = int(p.push[field])
    return p.track(name, props, mid=message_id("wx", p.openid, p.created, p.raw_event, msg_id))


def _subscribe_popup(p: _Push, event: str) -> list[dict]:
    return _subscribe_results(p.push, p.app_id, p.openid, p.created, p.context)


def _subscribe_sent(p: _Push, event: str) -> list[dict]:
    sent = p.push.get("SubscribeMsgSentEvent") or {}
    item = sent.get("List") if isinstance(sent, dict) else {}
    item = item[0] if isinstance(item, list) and item else item
    item = item if isinstance(item, dict) else {}
    props = {
        "template_id": _text(item.get("TemplateId"), 128),
        "msg_id": _text(item.get("MsgID"), 64),
        "error_code": _text(item.get("ErrorCode"), 16),
        "status": _text(item.get("ErrorStatus"), 100),
    }
    mid = message_id("wx", p.openid, p.created, p.raw_event, props["msg_id"])
    return p.track("subscribe_message_delivery", props, mid=mid)


HANDLERS = {
    "subscribe": _subscribe,
    "subscribe_scan": _subscribe,
    "unsubscribe": _unsubscribe,
    "scan": _scan,
    "location": _location,
    "templatesendjobfinish": _job_finished,
    "masssendjobfinish": _job_finished,
    "subscribe_msg_popup_event": _subscribe_popup,
    "subscribe_msg_change_event": _subscribe_popup,
    "subscribe_msg_sent_event": _subscribe_sent,
}


def parse_push(push: dict, app_id: str) -> list[dict]:
    """The canonical messages of one WeChat push (usually one; a subscription popup may carry
    several templates). Raises PushError when the push lacks the common fields."""
    if not isinstance(push, dict):
        raise PushError("the push is not an XML document with fields")
    p = _Push(push, app_id)
    msg_type, event = classify(push)
    if msg_type != "event":
        return [_user_message(push, msg_type, app_id, p.openid, p.created, p.context)]
    handler = HANDLERS.get(event)
    if handler is not None:
        return handler(p, event)
    name = SIMPLE_EVENTS.get(event)
    props = _copied(push)
    if name is None:  # anything else is kept, under its WeChat name
        name, props = "wechat_event", {**props, "event": p.raw_event}
    return p.track(name, props)
