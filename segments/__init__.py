"""Segments: rule language compiled to SQL, real-time membership, propensity models."""

from flask import Flask


def init_app(app: Flask) -> None:
    """Nothing to wire yet; the segments issue adds its jobs and hooks here."""
