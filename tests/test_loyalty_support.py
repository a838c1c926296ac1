"""Shared set-up of the loyalty tests: two partners with a store each, products, a marketer.

Imported by the other ``test_loyalty*``/``test_partner*`` modules; it has no tests itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa

from cdp.actors import SYSTEM
from cdp.auth import accounts
from cdp.auth.tokens import create_token
from cdp.db import db
from cdp.loyalty import partners, products
from cdp.loyalty.partners import PartnerActor
from cdp.models import Identity


@dataclass
class Partner:
    id: int
    code: str
    key: str
    store: str

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.key}"}

    @property
    def actor(self) -> PartnerActor:
        return PartnerActor(kind="partner", role="partner", partner_id=self.id)


@dataclass
class Loyalty:
    app: object
    client: object
    a: Partner
    b: Partner
    marketer_token: str
    profiles: dict = field(default_factory=dict)

    @property
    def marketer(self) -> dict:
        return {"Authorization": f"Bearer {self.marketer_token}"}

    def sync(self, partner: Partner, rows, **kwargs):
        return self.client.post(
            "/api/v1/partner/members", json=rows, headers=partner.headers, **kwargs
        )

    def member(self, partner: Partner, card: str, phone: str, **extra) -> int:
        """Sync one member and return the profile id its card resolved to."""
        response = self.sync(partner, [{"card_no": card, "phone": phone, **extra}])
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["results"][0]["status"] in ("created", "updated", "unchanged")
        with self.app.app_context():
            return db.session.scalar(
                sa.select(Identity.profile_id).where(
                    Identity.type == "pharmacy_member",
                    Identity.namespace == partner.code,
                    Identity.value_index == card,
                )
            )

    def campaign(self, **overrides) -> int:
        body = {
            "name": "续方立减 10 元",
            "type": "amount_off",
            "value": 10,
            "budget": 100,
            "per_profile_limit": 1,
            "valid_days": 30,
            "status": "active",
            **overrides,
        }
        response = self.client.post("/api/v1/coupon-campaigns", json=body, headers=self.marketer)
        assert response.status_code == 201, response.get_json()
        return response.get_json()["id"]

    def issue(self, campaign_id: int, profile_id: int, key: str = "k1"):
        return self.client.post(
            f"/api/v1/coupon-campaigns/{campaign_id}/issue",
            json={"profile_id": profile_id, "issue_key": key},
            headers=self.marketer,
        )

    def coupon(self, campaign_id: int, profile_id: int, key: str = "k1") -> str:
        response = self.issue(campaign_id, profile_id, key)
        assert response.status_code in (200, 201), response.get_json()
        return response.get_json()["code"]


def make_partner(code: str, name: str, store: str) -> Partner:
    partner, key = partners.create_partner(SYSTEM, name, code)
    partners.add_store(SYSTEM, partner.id, store, f"{name} 一号店", "长沙")
    return Partner(partner.id, code, key, store)


def setup_loyalty(app) -> Loyalty:
    with app.app_context():
        a = make_partner("lbx", "老百姓大药房", "LBX-CS-001")
        b = make_partner("yf", "益丰大药房", "YF-CS-001")
        products.import_demo_products(SYSTEM)
        user, _ = accounts.create_user(SYSTEM, "marketer@test.cn", "marketer", "x" * 12)
        _, token = create_token(SYSTEM, user)
    return Loyalty(app, app.test_client(), a, b, token)
