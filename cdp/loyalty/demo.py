"""Demo loyalty data on top of ``cdp seed-demo``: the demo chains as partners, campaigns,
coupons issued to their members, redemptions at their stores, and points.

The demo generator already gave patients ``pharmacy_member:<chain>`` cards, so making each
chain a partner (same code) makes those patients its members at once.
"""

from __future__ import annotations

from random import Random

import sqlalchemy as sa

from cdp.actors import Actor
from cdp.db import db
from cdp.exceptions import CdpError
from cdp.loyalty import campaigns, coupons, partners, points, products, redemptions
from cdp.loyalty.partners import PartnerActor
from cdp.models import Identity, Profile
from cdp.models.loyalty import Partner
from cdp.seed import vocab


def seed_loyalty(actor: Actor, members: int = 300, seed: int = 7) -> dict[str, str]:
    """Create the demo partners and activity; returns {partner code: API key}."""
    rng = Random(seed)
    products.import_demo_products(actor)
    keys, stores = {}, {}
    for chain in vocab.PHARMACY_CHAINS:
        partner, key = partners.create_partner(actor, chain.name, chain.code)
        keys[chain.code] = key
        cities = [c for c in vocab.CITIES if not chain.cities or c.name in chain.cities]
        stores[partner.id] = []
        for city in cities[:4]:
            for store in vocab.stores_in(city):
                if store.chain == chain.code:
                    partners.add_store(actor, partner.id, store.code, store.name, store.city)
                    stores[partner.id].append(store.code)
    otc = [d.code for d in vocab.OTC]
    made = [
        campaigns.create_campaign(actor, body)
        for body in (
            {"name": "常备药 5 元券", "type": "amount_off", "value": 5, "budget": 5000,
             "valid_days": 30, "products": otc, "status": "active"},
            {"name": "新会员 20 元券", "type": "amount_off", "value": 20, "min_spend": 100,
             "budget": 2000, "valid_days": 60, "status": "active"},
            {"name": "感冒药 9 折", "type": "percent_off", "value": 10, "budget": 1000,
             "valid_days": 14, "products": sorted(vocab.COLD_AND_FLU), "status": "active"},
        )
    ]  # fmt: skip
    by_code = {p.code: p.id for p in db.session.scalars(sa.select(Partner))}
    cards = db.session.execute(
        sa.select(Identity.profile_id, Identity.namespace, Identity.value_index)
        .join(Profile, Profile.id == Identity.profile_id)
        .where(Identity.type == "pharmacy_member", Profile.kind == "patient")
        .where(Profile.merged_into_id.is_(None))
        .order_by(Identity.id)
        .limit(members)
    ).all()
    for n, (profile_id, chain, _card) in enumerate(cards):
        partner_id = by_code.get(chain)
        if partner_id is None or not stores[partner_id]:
            continue
        till = PartnerActor(kind="partner", role="partner", partner_id=partner_id)
        store = rng.choice(stores[partner_id])
        campaign = made[n % len(made)]
        try:
            coupon, _ = coupons.issue_coupon(actor, campaign.id, profile_id, f"demo-{n}")
            if rng.random() < 0.4:
                codes = [campaign.products[0]] if campaign.products else []
                redemptions.redeem(till, coupon.code, store, f"DEMO-{n}", 12_000, codes)
            items = [{"product_code": rng.choice(otc), "amount": rng.randrange(20, 200)}]
            points.earn_purchase(till, profile_id, f"DEMO-{n}", store, items)
            if rng.random() < 0.3:
                points.burn(till, profile_id, 10, f"DEMO-B-{n}", store)
        except CdpError:  # e.g. a member who already holds the campaign's coupon
            continue
    return keys
