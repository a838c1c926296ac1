"""Mini-program: wx.login code → code2Session (stub) → signed session token; events with the
session's identity; subscribe-message results per template; phone binding."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from werkzeug import Response

from cdp.actors import SYSTEM
from cdp.db import db
from cdp.models import Event, Identity
from cdp.sources import create_source
from connectors import wechat_api
from connectors.models import MiniprogramSession

APP_ID = "wx7e6f5a4b3c2d1e0f"


def _json(body, status=200):
    return Response(json.dumps(body), status=status, content_type="application/json")


@pytest.fixture
def wechat(httpserver):
    """code2Session, stable_token and the phone API of a stub WeChat."""
    wechat_api.forget_tokens()
    sessions = {
        "CODE_A": {"openid": "oMpUserA0000000000000000000a", "session_key": "SeCrEtKeY==",
                   "unionid": "oUnionA000000000000000000000"},
        "CODE_B": {"openid": "oMpUserB0000000000000000000b", "session_key": "k2=="},
    }  # fmt: skip

    def code2session(request):
        assert request.args["appid"] == APP_ID and request.args["secret"] == "mp-secret"
        found = sessions.get(request.args["js_code"])
        return _json(found or {"errcode": 40029, "errmsg": "invalid code"})

    def phone(request):
        if request.args.get("access_token") != "MPTOKEN":
            return _json({"errcode": 40001, "errmsg": "invalid credential"})
        if request.get_json()["code"] != "PHONE_CODE":
            return _json({"errcode": 40029, "errmsg": "invalid code"})
        info = {"phoneNumber": "13761234567", "purePhoneNumber": "13761234567",
                "countryCode": 86, "watermark": {"timestamp": 1700000000, "appid": APP_ID}}  # fmt: skip
        return _json({"errcode": 0, "errmsg": "ok", "phone_info": info})

    httpserver.expect_request("/sns/jscode2session").respond_with_handler(code2session)
    httpserver.expect_request("/cgi-bin/stable_token", method="POST").respond_with_json(
        {"access_token": "MPTOKEN", "expires_in": 7200}
    )
    httpserver.expect_request(
        "/wxa/business/getuserphonenumber", method="POST"
    ).respond_with_handler(phone)
    yield httpserver
    wechat_api.forget_tokens()


@pytest.fixture
def source_id(app, wechat) -> str:
    options = {
        "app_id": APP_ID,
        "app_secret": "mp-secret",
        "api_base": wechat.url_for("").rstrip("/"),
    }
    with app.app_context():
        source, _ = create_source(SYSTEM, "MP", "miniprogram", options)
        return source.id


def login(client, source_id, code="CODE_A") -> str:
    response = client.post(f"/connectors/miniprogram/{source_id}/login", json={"code": code})
    assert response.status_code == 200, response.get_json()
    return response.get_json()["session_token"]


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def stored(app, source_id) -> list[Event]:
    with app.app_context():
        query = sa.select(Event).where(Event.source_id == source_id).order_by(Event.id)
        return list(db.session.scalars(query))


def test_login_returns_a_signed_token_and_never_the_session_key(client, app, source_id):
    response = client.post(f"/connectors/miniprogram/{source_id}/login", json={"code": "CODE_A"})
    body = response.get_json()
    assert response.status_code == 200 and body["unionid"] is True
    assert "SeCrEtKeY" not in response.get_data(as_text=True)
    assert "session_key" not in body
    with app.app_context():
        [row] = db.session.scalars(sa.select(MiniprogramSession))
        assert row.openid.startswith("oMpUserA") and row.profile_id is not None
        types = {(i.type, i.namespace) for i in db.session.scalars(sa.select(Identity))}
    assert types == {("miniprogram_openid", APP_ID), ("wechat_unionid", "")}
    bad = client.post(f"/connectors/miniprogram/{source_id}/login", json={"code": "NOPE"})
    assert bad.status_code == 400 and "40029" in bad.get_json()["message"]
    assert client.post(f"/connectors/miniprogram/{source_id}/login", json={}).status_code == 400


def test_events_carry_the_sessions_identity_only(client, app, source_id):
    token = login(client, source_id)
    events = [
        {"type": "page", "name": "用药提醒", "messageId": "m1", "properties": {"path": "pages/remind"}},
        {"type": "track", "event": "quiz_answered", "messageId": "m2",
         "properties": {"quiz": "hypertension", "score": 8}, "traits": {"phone": "13911112222"},
         "context": {"externalIds": [{"type": "user_id", "id": "someone-else"}], "page": {"path": "q"}}},
    ]  # fmt: skip
    response = client.post(
        f"/connectors/miniprogram/{source_id}/events",
        json={"events": events},
        headers=bearer(token),
    )
    assert response.status_code == 200, response.get_json()
    login_event, page, quiz = stored(app, source_id)
    assert page.type == "page" and page.properties["path"] == "pages/remind"
    assert quiz.name == "quiz_answered" and quiz.properties["score"] == 8
    assert quiz.profile_id == login_event.profile_id
    with app.app_context():
        types = {i.type for i in db.session.scalars(sa.select(Identity))}
    assert "user_id" not in types and "phone" not in types  # the client cannot claim those
    # Resent by the SDK: deduped on the client's messageId within this user.
    client.post(
        f"/connectors/miniprogram/{source_id}/events",
        json={"events": events},
        headers=bearer(token),
    )
    assert len(stored(app, source_id)) == 3


def test_subscribe_message_results_become_one_event_per_template(client, app, source_id):
    token = login(client, source_id)
    result = {
        "type": "track",
        "event": "subscribe_message_result",
        "messageId": "sub-1",
        "properties": {"results": {"TMPL_REFILL": "accept", "TMPL_NEWS": "reject"}},
    }
    response = client.post(
        f"/connectors/miniprogram/{source_id}/events",
        json={"events": [result]},
        headers=bearer(token),
    )
    assert response.status_code == 200
    events = {e.name: e.properties for e in stored(app, source_id)[1:]}
    assert events["subscribe_accepted"]["template_id"] == "TMPL_REFILL"
    assert events["subscribe_refused"]["template_id"] == "TMPL_NEWS"
    assert all("results" not in p for p in events.values())


def test_bad_tokens_and_bodies(client, app, source_id):
    url = f"/connectors/miniprogram/{source_id}/events"
    assert client.post(url, json={"events": [{"event": "x"}]}).status_code == 401
    assert client.post(url, json={"events": []}, headers=bearer("forged.token")).status_code == 401
    token = login(client, source_id)
    assert client.post(url, json={"events": []}, headers=bearer(token)).status_code == 400
    no_name = client.post(url, json={"events": [{"type": "track"}]}, headers=bearer(token))
    assert no_name.status_code == 400 and "event" in no_name.get_json()["message"]
    assert (
        client.post(url, json={"events": [{"type": "alias"}]}, headers=bearer(token)).status_code
        == 400
    )
    huge = {"events": [{"event": "x", "properties": {"blob": "x" * 70000}}]}
    assert client.post(url, json=huge, headers=bearer(token)).status_code == 413
    # A token of one source is not valid on another.
    with app.app_context():
        other, _ = create_source(
            SYSTEM, "MP2", "miniprogram", {"app_id": APP_ID, "app_secret": "s"}
        )
        other_id = other.id
    response = client.post(
        f"/connectors/miniprogram/{other_id}/events",
        json={"events": [{"event": "x"}]},
        headers=bearer(token),
    )
    assert response.status_code == 401


def test_phone_binding_adds_a_phone_identifier(client, app, source_id):
    token = login(client, source_id, "CODE_B")
    url = f"/connectors/miniprogram/{source_id}/phone"
    response = client.post(url, json={"code": "PHONE_CODE"}, headers=bearer(token))
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["phone"] == "+86137****4567"
    with app.app_context():
        phones = list(db.session.scalars(sa.select(Identity).where(Identity.type == "phone")))
        openid = db.session.scalar(sa.select(Identity).where(Identity.type == "miniprogram_openid"))
        assert len(phones) == 1 and phones[0].profile_id == openid.profile_id
    assert client.post(url, json={"code": "USED"}, headers=bearer(token)).status_code == 400
