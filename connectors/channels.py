"""Registers the channel connectors (WeChat, mini-program, POS, e-commerce, SMS reports,
live-stream) with the app: their source kinds, HTTP endpoints, periodic pull jobs,
``cdp connectors`` commands, and the WeChat send adapters."""

from __future__ import annotations

from flask import Flask

from cdp.queue import register_periodic
from cdp.seed import wire as seed_wire
from cdp.sources import register_kind
from connectors import (
    cli,
    demo_wire,
    ecommerce,
    ecommerce_pull,
    livestream,
    miniprogram,
    pos,
    pulls,
    sms_reports,
    wechat,
    wechat_pull,
    wechat_send,  # noqa: F401  (registers the WeChat send channels with journeys.channels)
)


def init_app(app: Flask) -> None:
    for kind in (
        pulls.WechatPullKind(),
        miniprogram.MiniprogramSourceKind(),
        pos.PosSourceKind(),
        pulls.EcommercePullKind(),
        sms_reports.SmsSourceKind(),
        livestream.LivestreamSourceKind(),
    ):
        register_kind(kind)
    for blueprint in (
        wechat.bp,
        miniprogram.bp,
        pos.bp,
        ecommerce.bp,
        sms_reports.bp,
        livestream.bp,
    ):
        app.register_blueprint(blueprint)
    register_periodic(wechat_pull.PERIODIC)
    register_periodic(ecommerce_pull.PERIODIC)
    app.cli.add_command(cli.connectors_group)
    # For `cdp seed-demo` (cdp cannot import connectors): wire payloads through the parsers.
    seed_wire.register(app, demo_wire)
