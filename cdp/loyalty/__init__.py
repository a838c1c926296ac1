"""Loyalty: partner pharmacies and member sync, coupon campaigns and coupons, points ledger.

Operations take an ``Actor``, check a permission, own their transaction and write the
audit row. Modules:

* ``partners``: partners, stores, API keys, ``PartnerActor``;
* ``members``/``syncs``/``consents``: member uploads through ingestion, consent in bulk;
* ``feed``: what a partner reads about its members (lookup, changes feed);
* ``products``/``campaigns``/``coupons``: the catalogue, campaigns, coupon issue and codes;
* ``redemptions``: redeem at the till, void, coupon expiry;
* ``points``/``accounts``/``ledger``: the points ledger, expiry, reconciliation;
* ``tasks``: background syncs and the expiry job;
* ``privacy``: the person's loyalty data in exports and erasures;
* ``unmerge``: undoing a merge gives each person back their own points;
* ``demo``: demo partners and activity (``cdp loyalty seed-demo``).
"""

from __future__ import annotations

from flask import Flask

from cdp.identity.merges import register_unmerge_hook
from cdp.loyalty import privacy, syncs, tasks, unmerge
from cdp.loyalty.common import DEFAULTS, LOYALTY_SOURCE_KIND
from cdp.loyalty.consents import watch_consent_withdrawals
from cdp.privacy.erasure import register_erasure_hook
from cdp.privacy.export import register_export_section
from cdp.privacy.keys import register_encrypted_column
from cdp.queue import register_periodic
from cdp.sources import SourceKind, register_kind
from cdp.sweeper import register_sweep_hook


class LoyaltySourceKind(SourceKind):
    """The internal source coupon and points events are stored under."""

    name = LOYALTY_SOURCE_KIND
    label = "Loyalty (coupons and points)"


def init_app(app: Flask) -> None:
    """Settings, the internal source kind, the expiry job, sweep hook and consent watch."""

    for name, value in DEFAULTS.items():
        app.config.setdefault(name, value)
    register_kind(LoyaltySourceKind())
    register_periodic(tasks.EXPIRY_JOB)
    register_periodic(tasks.EVENTS_JOB)
    register_sweep_hook("loyalty-member-syncs", tasks.requeue_stale_syncs)
    watch_consent_withdrawals()
    register_export_section("loyalty", privacy.export_section)
    register_erasure_hook("loyalty", privacy.erase)
    register_unmerge_hook("loyalty", unmerge.split_points)
    for column in syncs.ENCRYPTED_COLUMNS:
        register_encrypted_column(column)
