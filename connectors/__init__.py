"""Connectors: one module per source kind, each turning its wire format into canonical events."""

from flask import Flask

from cdp.privacy.keys import EncryptedColumn, formatted, register_encrypted_column
from cdp.sources import register_kind
from connectors import channels, pharmacy, segment_api


def init_app(app: Flask) -> None:
    """Register every connector's source kind and endpoints."""
    register_kind(segment_api.HttpSourceKind())
    app.config.setdefault("SOURCE_RATE_LIMIT", segment_api.DEFAULT_SOURCE_RATE_LIMIT)
    app.register_blueprint(segment_api.bp)
    pharmacy.init_app(app)
    channels.init_app(app)
    # Cached WeChat access tokens (associated data as in wechat_api.WeChatApi._aad).
    register_encrypted_column(
        EncryptedColumn(
            "connector_tokens", "token_encrypted", ("app_id",), formatted("wechat-token:{}")
        )
    )
