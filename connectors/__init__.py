"""Connectors: one module per source kind, each turning its wire format into canonical events."""

from flask import Flask

from cdp.sources import register_kind
from connectors import segment_api


def init_app(app: Flask) -> None:
    """Register every connector's source kind (and, later, its endpoints)."""
    register_kind(segment_api.HttpSourceKind())
