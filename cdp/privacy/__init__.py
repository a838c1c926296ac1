"""PIPL data-subject rights and data protection: consent from channel events, export, erasure
with tombstones, event retention, minors, and PII key rotation.

``init_app`` is called by the app factory: it registers the consent event processor and the
periodic retention purge and content expiry jobs.
"""

from __future__ import annotations

from cdp.privacy import consent_events, retention


def init_app(app) -> None:

    consent_events.init_app(app)
    retention.init_app(app)
