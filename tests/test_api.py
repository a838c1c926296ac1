"""The REST API under /api/v1: bearer tokens, roles, JSON errors and the OpenAPI document."""

import sqlalchemy as sa

from cdp.actors import SYSTEM
from cdp.auth import tokens
from cdp.db import db
from cdp.models import ApiToken, User
from tests.conftest import make_user


def issue_token(app, user_id: int) -> str:
    with app.app_context():
        _, raw = tokens.create_token(SYSTEM, db.session.get(User, user_id))
        return raw


def bearer(raw: str) -> dict:
    return {"Authorization": f"Bearer {raw}"}


def test_token_identifies_its_user(app, client, admin):
    raw = issue_token(app, admin)
    response = client.get("/api/v1/me", headers=bearer(raw))
    assert response.status_code == 200
    assert response.json["email"] == "admin@test.cn"
    assert response.json["role"] == "admin"


def test_missing_or_invalid_token_is_401_json(app, client, admin):
    for headers in (
        {},
        bearer("cdp_not-a-real-token-at-all-1234567890"),
        {"Authorization": "Basic x"},
    ):
        response = client.get("/api/v1/me", headers=headers)
        assert response.status_code == 401
        assert response.is_json
        assert response.json["code"] == 401
        assert "Bearer" in response.headers["WWW-Authenticate"]


def test_token_in_query_string_is_refused_even_if_valid(app, client, admin):
    raw = issue_token(app, admin)
    response = client.get(f"/api/v1/me?access_token={raw}")
    assert response.status_code == 401
    assert "query string" in response.json["message"]
    response = client.get(f"/api/v1/me?token={raw}", headers=bearer(raw))
    assert response.status_code == 401


def test_revoked_token_is_refused_on_next_request(app, client, admin):
    raw = issue_token(app, admin)
    assert client.get("/api/v1/me", headers=bearer(raw)).status_code == 200
    with app.app_context():
        token_id = db.session.scalar(sa.select(ApiToken.id))
        tokens.revoke_token(SYSTEM, token_id)
    assert client.get("/api/v1/me", headers=bearer(raw)).status_code == 401


def test_tokens_are_stored_as_prefix_and_hash_only(app, admin):
    raw = issue_token(app, admin)
    assert len(raw) >= 4 + 43  # "cdp_" + 256 random bits in url-safe base64
    with app.app_context():
        row = db.session.scalar(sa.select(ApiToken))
        assert raw not in (row.prefix, row.token_hash)
        assert raw[4:].startswith(row.prefix)
    with open(app.config["SQLALCHEMY_DATABASE_URI"].removeprefix("sqlite:///"), "rb") as f:
        assert raw.encode() not in f.read()


def test_forbidden_role_gets_403_json(app, client):
    marketer = make_user(app, "marketer")
    raw = issue_token(app, marketer)
    response = client.get("/api/v1/users", headers=bearer(raw))
    assert response.status_code == 403
    assert response.is_json
    assert client.get("/api/v1/sources", headers=bearer(raw)).status_code == 200


def test_partner_token_cannot_use_management_api(app, client):
    partner = make_user(app, "partner")
    raw = issue_token(app, partner)
    assert client.get("/api/v1/sources", headers=bearer(raw)).status_code == 403
    assert client.get("/api/v1/jobs", headers=bearer(raw)).status_code == 403


def test_admin_creates_user_and_bad_fields_are_named(app, client, admin):
    raw = issue_token(app, admin)
    created = client.post(
        "/api/v1/users", json={"email": "m@test.cn", "role": "marketer"}, headers=bearer(raw)
    )
    assert created.status_code == 201
    assert created.json["role"] == "marketer"
    assert len(created.json["password"]) >= 10
    bad = client.post(
        "/api/v1/users", json={"email": "not-an-email", "role": "king"}, headers=bearer(raw)
    )
    assert bad.status_code == 422
    assert set(bad.json["errors"]["json"]) == {"email", "role"}
    duplicate = client.post(
        "/api/v1/users", json={"email": "m@test.cn", "role": "marketer"}, headers=bearer(raw)
    )
    assert duplicate.status_code == 409
    assert duplicate.json["errors"] == {"email": ["a user with e-mail m@test.cn already exists"]}


def test_create_source_returns_write_key_once_and_masks_nothing_secret(app, client, admin):
    raw = issue_token(app, admin)
    response = client.post(
        "/api/v1/sources", json={"name": "官网", "kind": "http"}, headers=bearer(raw)
    )
    assert response.status_code == 201
    assert response.json["write_key"].startswith("wk_")
    assert response.json["urls"]["batch"].endswith("/v1/batch")
    listed = client.get("/api/v1/sources", headers=bearer(raw)).json
    assert "write_key" not in listed[0]
    unknown = client.post(
        "/api/v1/sources", json={"name": "x", "kind": "carrier-pigeon"}, headers=bearer(raw)
    )
    assert unknown.status_code == 422
    assert "kind" in unknown.json["errors"]


def test_malformed_json_body_is_a_4xx_not_500(app, client, admin):
    raw = issue_token(app, admin)
    response = client.post(
        "/api/v1/users",
        data=b"{not json",
        headers={**bearer(raw), "Content-Type": "application/json"},
    )
    assert 400 <= response.status_code < 500
    assert response.is_json


def test_unknown_api_route_is_json_404_and_ui_route_is_html_404(client):
    api = client.get("/api/v1/nope")
    assert api.status_code == 404
    assert api.is_json
    ui = client.get("/nope")
    assert ui.status_code == 404
    assert ui.mimetype == "text/html"


def test_openapi_document_is_served_and_declares_bearer_auth(client):
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    spec = response.json
    assert "/api/v1/sources" in spec["paths"]
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_ids_too_large_for_any_column_are_a_404_not_a_500(app, client, admin):
    """Route ids beyond a 32-bit integer column never reach SQL (it would overflow: a 500)."""
    headers = bearer(issue_token(app, admin))
    for path in ("/api/v1/segments/99999999999999999999999", "/api/v1/journeys/2147483648",
                 "/api/v1/content/items/99999999999999999999", "/api/v1/segments/2147483647"):  # fmt: skip
        response = client.get(path, headers=headers)
        assert response.status_code == 404 and response.is_json, path
