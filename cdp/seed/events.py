"""The demo's events as their channels deliver them, prepared by ingestion and buffered as rows.

Channel events start as provider payloads rendered and parsed by the connectors
(``cdp.seed.wire``): WeChat XML pushes, mini-program uploads, POS bodies, shop orders. What
WeChat never pushes (article reads and template-message clicks, which the official
account's H5 pages report through the tracking API) starts as a tracking-API message. Either
way the canonical message goes through ingestion's ``Preparer``, the same step ``/v1/`` and
the connectors' endpoints take, and what it makes of it is buffered for bulk insert on the
generator's own profile id: identity resolution is the one step skipped, since the seed
knows whose event it is.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from cdp.ingest.messages import Preparer
from cdp.seed import vocab
from cdp.seed.wire import DemoWire

# Seconds between an event and its arrival: POS systems sync in batches, WeChat pushes at once.
ARRIVAL_DELAY = {"wechat": 3, "miniprogram": 5, "pos": 6 * 3600, "ecommerce": 600}
EVENT_COLUMNS = ("source_id", "message_id", "profile_id", "type", "name", "timestamp")
EVENT_COLUMNS += ("received_at", "properties", "context")


class ChannelEvents:
    """Mixin of the demo generator: needs ``rng``, ``now``, ``wire``, ``preparer`` and
    ``source_ids``; people carry their channel identities (``openid``, ``mp_openid``…)."""

    rng: object
    now: datetime
    wire: DemoWire
    preparer: Preparer
    source_ids: dict[str, str]

    def _message_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def deliver(self, person, channel: str, message: dict | None) -> None:
        """Prepare ``message`` as ingestion would and buffer its row (a redelivery is dropped)."""
        if message is None:
            return
        candidate = self.preparer.prepare(0, message)
        if candidate.message_id in person.message_ids:
            return  # the same dedupe key twice (one user, one event, one second): stored once
        person.message_ids.add(candidate.message_id)
        ts = candidate.timestamp
        arrived = min(
            ts + timedelta(seconds=self.rng.uniform(0.05, ARRIVAL_DELAY[channel])), self.now
        )
        values = (self.source_ids[channel], candidate.message_id, person.id, candidate.type)
        values += (candidate.name, ts, arrived, candidate.properties, candidate.context)
        person.events.append(dict(zip(EVENT_COLUMNS, values, strict=True)))
        if candidate.traits:
            person.traits_seen.append((ts, candidate.traits))

    def wechat(self, person, event: str, ts: datetime, key: str = "") -> None:
        """A WeChat push: ``subscribe`` (``key`` = ``qrscene_…``), ``menu_click``, ``menu_view``."""
        message = self.wire.wechat_push(vocab.WECHAT_OA_APP_ID, person.openid, event, ts, key)
        self.deliver(person, "wechat", message)

    def wechat_text(self, person, ts: datetime, text: str) -> None:
        msg_id = self.rng.randrange(10**18, 10**19)
        message = self.wire.wechat_text(vocab.WECHAT_OA_APP_ID, person.openid, ts, msg_id, text)
        self.deliver(person, "wechat", message)

    def h5(self, person, name: str, ts: datetime, properties: dict) -> None:
        """What the OA's H5 pages report through the tracking API (WeChat pushes no reads)."""
        ids = [{"type": "wechat_openid", "id": person.openid, "collection": vocab.WECHAT_OA_APP_ID}]
        message = {
            "type": "track",
            "event": name,
            "messageId": self._message_id(),
            "timestamp": ts.isoformat(),
            "properties": properties,
            "context": {"externalIds": ids, "channel": "wechat"},
        }
        self.deliver(person, "wechat", message)

    def mini(self, person, name: str | None, ts: datetime, properties=None, traits=None) -> None:
        """One mini-program upload event: a ``track`` named ``name``, or an ``identify``."""
        event = {"messageId": self._message_id(), "timestamp": ts.isoformat()}
        if name is None:
            event.update(type="identify", traits=traits or {})
        else:
            event.update(type="track", event=name, properties=properties or {})
        app_id = vocab.MINIPROGRAM_APP_ID
        message = self.wire.miniprogram_event(app_id, person.mp_openid, event, person.unionid)
        self.deliver(person, "miniprogram", message)

    def _follow_key(self, person) -> str:
        """The EventKey of a follow: mostly a parametric QR code (``qrscene_<scene>``)."""
        rng = self.rng
        r = rng.random()
        if r < 0.25:
            return ""  # found by search or a shared name card: no scene
        if r < 0.5 and person.store is not None:
            return f"qrscene_store_{person.store.code}"  # the poster at the member's pharmacy
        return "qrscene_" + rng.choices(*zip(*vocab.QR_SCENES, strict=True))[0]

    def _wechat_touch(self, person, ts: datetime, r: float) -> None:
        """Reads and clicks from the OA's pages, or a push: a menu tap or a question sent."""
        rng = self.rng
        if r < 0.6:
            article_id, title = rng.choice(vocab.ARTICLES)
            self.h5(person, "article_read", ts, {"article_id": article_id, "title": title})
        elif r < 0.75:
            template_id, title = rng.choice(vocab.TEMPLATES)
            self.h5(person, "template_click", ts, {"template_id": template_id, "title": title})
        elif r < 0.87:
            self.wechat(person, "menu_click", ts, rng.choice(vocab.MENU_CLICKS))
        elif r < 0.96:
            self.wechat(person, "menu_view", ts, rng.choice(vocab.MENU_VIEWS))
        else:
            self.wechat_text(person, ts, rng.choice(vocab.FOLLOWER_QUESTIONS))
