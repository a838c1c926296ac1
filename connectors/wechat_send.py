"""WeChat send adapters: official-account template messages and mini-program subscribe messages.

Both reuse ``connectors.wechat_api.WechatClient`` (one cached ``stable_token`` per app id,
renewed once when WeChat rejects it) with its own retries turned off: whether and when to
resend is the delivery performer's decision, and a subscribe message resent after a
timeout could reach the person twice.

The account is the ``wechat`` / ``miniprogram`` source (enabled, with an ``app_secret``)
whose ``app_id`` is the namespace of one of the profile's ``wechat_openid`` /
``miniprogram_openid`` identifiers (newest first).

- ``wechat``: ``POST cgi-bin/message/template/send`` ``{touser, template_id, url,
  miniprogram: {appid, pagepath}, data, client_msg_id}``. WeChat sends one message per
  (openid, client_msg_id) for about ten minutes, so the channel counts as idempotent.
- ``miniprogram``: ``POST cgi-bin/message/subscribe/send`` ``{touser, template_id, page,
  data, miniprogram_state, lang}``. No idempotency key: not idempotent.

Errors (../shared/protocols/china-channels.md §3.3): 43004 not following, 40003 bad openid,
43101 refused, 43019 blocked → permanent and unreachable; 45009 / 45011 / 45047 → rate
limited (the account's bucket is drained for a minute); -1, 5xx and network → transient.
"""

from __future__ import annotations

import hashlib

import requests
import sqlalchemy as sa

from cdp.db import db
from cdp.models import Source
from cdp.sources import source_options
from connectors.wechat_api import TOKEN_ERRORS, Transient, WechatApiError, WechatClient
from connectors.wechat_api import RateLimited as ApiRateLimited
from journeys.channels.base import (
    Channel,
    Outbound,
    PermanentError,
    RateLimited,
    Sent,
    TransientError,
    register_channel,
)
from journeys.channels.http import never_sent
from journeys.channels.ratelimit import acquire, slow_down
from journeys.channels.recipients import openids_of

UNREACHABLE = {
    43004: "unsubscribed",
    40003: "invalid_recipient",
    43101: "user_refused",
    43019: "user_blocked",
}
RATE_LIMITED = frozenset({45009, 45011, 45047})
PERMANENT = {
    40037: "invalid_template",
    47003: "invalid_data",
    41030: "invalid_page",
    40013: "provider_credentials",
    40125: "provider_credentials",
    40164: "provider_credentials",  # calling IP not on the account's allow-list
    48001: "provider_credentials",  # the account may not use this API
}
RATE_LIMIT_PAUSE = 60.0
MAX_CLIENT_MSG_ID = 64


def wechat_accounts(kind: str) -> dict[str, dict]:
    """app id -> decrypted options of the enabled sources of ``kind`` that can call the API."""
    accounts: dict[str, dict] = {}
    sources = db.session.scalars(
        sa.select(Source).where(Source.kind == kind, Source.enabled.is_(True)).order_by(Source.id)
    )
    for source in sources:
        options = source_options(source)
        if options.get("app_id") and options.get("app_secret"):
            accounts.setdefault(options["app_id"], options)
    return accounts


def client_msg_id(key: str) -> str:
    """The delivery key, hashed if it is longer than WeChat is known to accept."""
    if len(key) <= MAX_CLIENT_MSG_ID:
        return key
    return "k" + hashlib.sha256(key.encode()).hexdigest()[:40]


class _WechatChannel(Channel):
    source_kind = ""
    identity_type = ""
    kinds: tuple[str, ...] = ()
    path = ""

    def account_for(self, profile_id: int) -> tuple[dict, str]:
        """(the source options of the app, the profile's openid in that app)."""
        openids = openids_of(profile_id, self.identity_type)
        if not openids:
            raise PermanentError(
                "no_recipient", f"the profile has no {self.identity_type}", unreachable=True
            )
        accounts = wechat_accounts(self.source_kind)
        for app_id, openid in openids:
            if app_id in accounts:
                return accounts[app_id], openid
        apps = ", ".join(sorted({app_id for app_id, _ in openids}))
        raise PermanentError(
            "no_account", f"no enabled {self.source_kind} source with an app_secret for {apps}"
        )

    def client(self, options: dict) -> WechatClient:
        return WechatClient(
            options["app_id"],
            options["app_secret"],
            options.get("api_base"),
            timeout=self.timeout()[1],
            rate_per_second=0,  # our Redis bucket paces every process, not one client
            max_attempts=1,
            rate_limit_attempts=1,
        )

    def body(self, out: Outbound, openid: str) -> dict:
        raise NotImplementedError

    def send(self, out: Outbound) -> Sent:
        if out.kind not in self.kinds:
            raise PermanentError("wrong_kind", f"{out.kind} content cannot go by {self.name}")
        options, openid = self.account_for(out.profile_id)
        body = self.body(out, openid)
        app_id = options["app_id"]
        acquire(self.name, app_id, self.config)
        try:
            data = self.client(options).post(self.path, body)
        except WechatApiError as exc:
            raise self._error(exc, app_id) from None
        msgid = data.get("msgid")
        return Sent(str(msgid) if msgid not in (None, "") else None, app_id, data)

    def _error(self, exc: WechatApiError, app_id: str):
        code, detail = exc.errcode, str(exc)[:300]
        if isinstance(exc, Transient):
            cause = exc.__context__  # the requests exception, when the network failed
            if isinstance(cause, requests.Timeout | requests.ConnectionError):
                reason = "timeout" if isinstance(cause, requests.Timeout) else "network"
                return TransientError(reason, detail, uncertain=not never_sent(cause))
            return TransientError("provider_unavailable", detail)
        if isinstance(exc, ApiRateLimited) or code in RATE_LIMITED:
            slow_down(self.name, app_id, RATE_LIMIT_PAUSE, self.config)
            return RateLimited("provider_rate_limited", detail, RATE_LIMIT_PAUSE)
        if code in UNREACHABLE:
            return PermanentError(UNREACHABLE[code], detail, unreachable=True)
        if code in TOKEN_ERRORS:  # still refused after a fresh token: retry later
            return TransientError("token_rejected", detail)
        return PermanentError(PERMANENT.get(code, "provider_rejected"), detail)


@register_channel
class WechatTemplateChannel(_WechatChannel):
    name = "wechat"
    idempotent = True  # client_msg_id: WeChat sends one message per (openid, id) …
    idempotency_window = 600.0  # … for about ten minutes
    source_kind = "wechat"
    identity_type = "wechat_openid"
    kinds = ("wechat_template",)
    path = "/cgi-bin/message/template/send"

    def body(self, out: Outbound, openid: str) -> dict:
        message = out.message
        body = {
            "touser": openid,
            "template_id": message.get("template_id"),
            "data": message.get("data") or {},
            "client_msg_id": client_msg_id(out.key),
        }
        if message.get("url"):
            body["url"] = message["url"]
        jump = message.get("miniprogram") or {}
        if jump.get("appid"):
            body["miniprogram"] = {"appid": jump["appid"], "pagepath": jump.get("pagepath") or ""}
        return body


@register_channel
class MiniprogramSubscribeChannel(_WechatChannel):
    name = "miniprogram"
    idempotent = False  # subscribe/send takes no idempotency key
    source_kind = "miniprogram"
    identity_type = "miniprogram_openid"
    kinds = ("miniprogram_subscribe",)
    path = "/cgi-bin/message/subscribe/send"

    def body(self, out: Outbound, openid: str) -> dict:
        message = out.message
        body = {
            "touser": openid,
            "template_id": message.get("template_id"),
            "data": message.get("data") or {},
            "miniprogram_state": self.setting("MINIPROGRAM_STATE", "formal"),
            "lang": self.setting("MINIPROGRAM_LANG", "zh_CN"),
        }
        if message.get("page"):
            body["page"] = message["page"]
        return body
