"""The loyalty UI (campaigns, partners, sync history, reconciliation), the profile panel, the CLI."""

from __future__ import annotations

import orjson
import pytest
import sqlalchemy as sa
from flask import render_template
from flask_login import login_user

from cdp.db import db
from cdp.models import AuditEntry, User
from tests.conftest import AuthActions, csrf_token_from, make_user
from tests.test_loyalty_support import setup_loyalty


@pytest.fixture
def loyalty(app):
    return setup_loyalty(app)


def login(loyalty, role: str):
    client = loyalty.app.test_client()
    email = f"{role}-ui@test.cn"
    make_user(loyalty.app, role, email)
    AuthActions(client, loyalty.app).login(email)
    return client


def test_marketer_creates_a_campaign_and_sees_its_figures(loyalty):
    client = login(loyalty, "marketer")
    assert client.get("/loyalty").status_code == 200
    page = client.get("/loyalty/campaigns/new")
    form = {
        "csrf_token": csrf_token_from(page.get_data(as_text=True)),
        "name": "常备药 5 元券",
        "type": "amount_off",
        "value": "5",
        "budget": "100",
        "per_profile_limit": "1",
        "valid_days": "30",
        "audience": "patient",
        "products": "D017, D001",
        "status": "active",
    }
    refused = client.post("/loyalty/campaigns/new", data=form)
    assert refused.status_code == 422
    assert "D001" in refused.get_data(as_text=True)
    created = client.post("/loyalty/campaigns/new", data={**form, "products": "D017"})
    assert created.status_code == 302
    profile_id = loyalty.member(loyalty.a, "U-1", "13200000001")
    campaign_id = int(created.location.rsplit("/", 1)[1])
    code = loyalty.coupon(campaign_id, profile_id)
    loyalty.client.post(
        f"/api/v1/partner/coupons/{code}/redeem",
        json={"store_code": "LBX-CS-001", "order_id": "O-1", "product_codes": ["D017"]},
        headers=loyalty.a.headers,
    )
    detail = client.get(created.location)
    html = detail.get_data(as_text=True)
    assert detail.status_code == 200 and "常备药 5 元券" in html and "<polyline" in html
    assert "LBX-CS-001" in html.split('data-testid="by-store"')[1]
    listing = client.get("/loyalty").get_data(as_text=True)
    assert "1 / 100" in listing and "100.0%" in listing
    # Marketers do not manage partners.
    token = csrf_token_from(client.get("/loyalty/partners").get_data(as_text=True))
    assert (
        client.post("/loyalty/partners", data={"csrf_token": token, "name": "x"}).status_code == 403
    )


def test_admin_manages_partners_keys_stores_and_sync_history(loyalty):
    client = login(loyalty, "admin")
    page = client.get("/loyalty/partners")
    token = csrf_token_from(page.get_data(as_text=True))
    created = client.post(
        "/loyalty/partners", data={"csrf_token": token, "name": "大参林", "code": "dsl"}
    )
    html = created.get_data(as_text=True)
    assert created.status_code == 200 and 'data-testid="api-key"' in html and "pk_" in html
    partner_page = client.get(f"/loyalty/partners/{loyalty.a.id}")
    assert loyalty.a.key not in partner_page.get_data(as_text=True)  # only the prefix is shown
    token = csrf_token_from(partner_page.get_data(as_text=True))
    added = client.post(
        f"/loyalty/partners/{loyalty.a.id}/stores",
        data={"csrf_token": token, "code": "LBX-CS-002", "name": "二号店", "city": "长沙"},
    )
    assert added.status_code == 302
    loyalty.sync(
        loyalty.a, [{"card_no": "H-1", "phone": "13200000002"}, {"card_no": "H-2", "phone": "0"}]
    )
    history = client.get(f"/loyalty/partners/{loyalty.a.id}").get_data(as_text=True)
    assert "LBX-CS-002" in history and 'data-testid="rejected-1"' in history
    csv = client.post(
        f"/loyalty/partners/{loyalty.a.id}/syncs/1/rejected.csv", data={"csrf_token": token}
    )
    assert csv.status_code == 200 and csv.mimetype == "text/csv"
    assert "H-2" in csv.get_data(as_text=True) and "phone:" in csv.get_data(as_text=True)
    with loyalty.app.app_context():
        assert db.session.scalar(
            sa.select(AuditEntry.id).where(AuditEntry.action == "member_sync.rejected_download")
        )
    rotated = client.post(
        f"/loyalty/partners/{loyalty.a.id}/rotate-key", data={"csrf_token": token}
    )
    assert "pk_" in rotated.get_data(as_text=True)
    assert loyalty.client.get("/api/v1/partner/me", headers=loyalty.a.headers).status_code == 401
    assert client.get("/loyalty/reconciliation").status_code == 200


def test_profile_panel_shows_coupons_and_points(loyalty):
    profile_id = loyalty.member(loyalty.a, "V-1", "13200000003")
    loyalty.coupon(loyalty.campaign(name="新会员 20 元券"), profile_id)
    loyalty.client.post(
        "/api/v1/partner/points/earn",
        json={"member": "V-1", "order_id": "O-1", "store_code": "LBX-CS-001",
              "items": [{"product_code": "D017", "amount": 21.8}]},
        headers=loyalty.a.headers,
    )  # fmt: skip
    make_user(loyalty.app, "marketer", "panel@test.cn")
    with loyalty.app.test_request_context("/"):
        from cdp.models import Profile
        from web.session_auth import SessionUser

        user = db.session.scalar(sa.select(User).where(User.email == "panel@test.cn"))
        login_user(SessionUser(user, "session"))
        html = render_template(
            "loyalty/_profile_panel.html", profile=db.session.get(Profile, profile_id)
        )
    assert 'data-testid="loyalty-panel"' in html and "新会员 20 元券" in html
    assert 'data-testid="points-balance">21<' in html


def test_cli_creates_a_partner_and_rotates_its_key(app):
    runner = app.test_cli_runner()
    created = runner.invoke(args=["partners", "create", "--name", "一心堂", "--json"])
    assert created.exit_code == 0, created.output
    body = orjson.loads(created.output)
    assert set(body) >= {"id", "api_key"} and body["api_key"].startswith("pk_")
    rotated = runner.invoke(args=["partners", "rotate-key", "--partner", str(body["id"]), "--json"])
    assert rotated.exit_code == 0 and orjson.loads(rotated.output)["api_key"] != body["api_key"]
    store = runner.invoke(
        args=[
            "partners",
            "add-store",
            "--partner",
            body["code"],
            "--code",
            "YXT-KM-001",
            "--name",
            "昆明店",
        ]
    )
    assert store.exit_code == 0, store.output
    listing = runner.invoke(args=["partners", "list"])
    assert "一心堂" in listing.output


def test_demo_loyalty_on_top_of_the_demo_data(app):
    runner = app.test_cli_runner()
    assert runner.invoke(args=["seed-demo", "--patients", "80", "--doctors", "2"]).exit_code == 0
    seeded = runner.invoke(args=["loyalty", "seed-demo", "--members", "40", "--json"])
    assert seeded.exit_code == 0, seeded.output
    assert set(orjson.loads(seeded.output)["partners"]) == {"lbx", "yf", "dsl", "yxt", "gd"}
    again = runner.invoke(args=["loyalty", "seed-demo", "--if-empty", "--json"])
    assert orjson.loads(again.output) == {"partners": {}}
    assert runner.invoke(args=["loyalty", "reconcile"]).exit_code == 0
    with app.app_context():
        from cdp.models.loyalty import Coupon

        assert db.session.scalar(sa.select(sa.func.count()).select_from(Coupon)) > 0
