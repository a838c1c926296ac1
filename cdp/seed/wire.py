"""The hook through which connectors render the demo's channel events as provider payloads.

``cdp`` may not import ``connectors``, yet the demo's WeChat pushes, mini-program uploads,
POS transactions and shop orders should go through the connectors' own parsers. So the seed
asks for a ``DemoWire`` here, and ``connectors`` registers one at ``init_app``. Each method
builds the payload the provider would send (XML, JSON body, exported order), runs it through
the connector's parser and returns the canonical message (None when the parser drops it).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from flask import Flask, current_app

from cdp.seed.vocab import Drug

EXTENSION = "cdp.seed.wire"


class DemoWire(Protocol):
    def wechat_push(
        self, app_id: str, openid: str, event: str, at: datetime, key: str = ""
    ) -> dict | None:
        """An official-account event push: ``subscribe``, ``menu_click``, ``menu_view``…"""

    def wechat_text(self, app_id: str, openid: str, at: datetime, msg_id: int, text: str) -> dict:
        """A text message a follower sends the official account."""

    def miniprogram_event(
        self, app_id: str, openid: str, event: dict, unionid: str | None = None
    ) -> dict:
        """One event of a mini-program upload, with the identity of the login session."""

    def pos_sale(
        self,
        partner: str,
        store_code: str,
        txn_no: str,
        at: datetime,
        member: dict,
        lines: Sequence[tuple[Drug, int]],
    ) -> dict | None:
        """A partner pharmacy's POS sale of ``lines`` (drug, packs) to ``member``."""

    def shop_order(
        self,
        platform: str,
        order_id: str,
        at: datetime,
        buyer: str,
        lines: Sequence[tuple[Drug, int]],
        phone: str | None = None,
    ) -> dict | None:
        """A finished order: a Youzan push, or a Tmall trade / JD order as the export gives it."""


def register(app: Flask, wire: DemoWire) -> None:
    app.extensions[EXTENSION] = wire


def registered() -> DemoWire | None:
    return current_app.extensions.get(EXTENSION)
