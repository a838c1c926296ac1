"""The Profiles REST API: lookup, search, masked vs revealed PII, events, merges, violations, keys."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from cdp.actors import SYSTEM
from cdp.db import db
from cdp.ingest.pipeline import ingest
from cdp.models import AuditEntry, Event, Merge, Profile
from cdp.sources import create_source, get_source, source_for_write_key
from tests.conftest import make_user
from tests.test_api import bearer, issue_token

T0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
PHONE = "13800139001"


def at(minutes: int) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


@pytest.fixture
def source_id(app):
    with app.app_context():
        source, _ = create_source(SYSTEM, "公众号", "http")
        return source.id


def send(app, source_id: str, *messages: dict):
    with app.app_context():
        return ingest(get_source(source_id), list(messages))


@pytest.fixture
def admin_token(app, admin):
    return bearer(issue_token(app, admin))


@pytest.fixture
def marketer_token(app):
    return bearer(issue_token(app, make_user(app, "marketer", "marketer@test.cn")))


@pytest.fixture
def patient(app, source_id) -> int:
    """One patient with a phone number, a name, an openid and a plain trait."""
    send(
        app,
        source_id,
        {
            "type": "identify",
            "userId": "member-7",
            "traits": {"phone": PHONE, "name": "李娜", "city": "上海"},
            "context": {
                "externalIds": [{"type": "wechat_openid", "collection": "wx01", "id": "o6_abc"}]
            },
            "timestamp": at(0),
        },
    )
    with app.app_context():
        return db.session.scalar(sa.select(Profile.id))


@pytest.fixture
def merged_pair(app, source_id) -> tuple[int, int]:
    """Two people linked by a shared phone number: (survivor id, merged id)."""
    send(app, source_id, {"type": "identify", "anonymousId": "a1", "traits": {"phone": PHONE}})
    send(app, source_id, {"type": "identify", "userId": "m7", "traits": {"name": "李娜"}})
    send(app, source_id, {"type": "track", "event": "visit", "userId": "m7"})
    send(app, source_id, {"type": "identify", "userId": "m7", "traits": {"phone": PHONE}})
    with app.app_context():
        merge = db.session.scalar(sa.select(Merge))
        return merge.survivor_id, merge.merged_id


def audit_actions(app) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(sa.select(AuditEntry.action).order_by(AuditEntry.id)))


def error_fields(response) -> set[str]:
    """Field names a JSON error points at, whether from request parsing or the domain."""
    errors = response.json.get("errors") or {}
    names = set()
    for key, value in errors.items():
        names |= set(value) if isinstance(value, dict) else {key}
    return names


@pytest.mark.parametrize(
    "identifier",
    ["phone:13800139001", "phone:+86 138-0013-9001", "phone:(+86) 138 0013 9001"],
)
def test_lookup_by_phone_in_any_format_finds_the_profile_masked(
    client, admin_token, patient, identifier
):
    response = client.get(
        "/api/v1/profiles", query_string={"identifier": identifier}, headers=admin_token
    )
    assert response.status_code == 200, response.json
    body = response.json
    assert body["id"] == patient and body["merged_into"] is None
    assert body["kind"] == "patient" and body["traits"] == {"city": "上海"}
    assert "pii" not in body
    phones = [i["value"] for i in body["identifiers"] if i["type"] == "phone"]
    assert phones == ["+86138****9001"]
    assert PHONE not in response.get_data(as_text=True)
    assert "李娜" not in response.get_data(as_text=True)


def test_lookup_by_namespaced_openid(client, admin_token, patient):
    response = client.get(
        "/api/v1/profiles?identifier=wechat_openid:wx01:o6_abc", headers=admin_token
    )
    assert response.status_code == 200
    assert response.json["id"] == patient
    other_app = client.get(
        "/api/v1/profiles?identifier=wechat_openid:wx99:o6_abc", headers=admin_token
    )
    assert other_app.status_code == 404


def test_unknown_identifier_is_404_and_malformed_is_422_naming_it(client, admin_token, patient):
    missing = client.get("/api/v1/profiles?identifier=phone:13900000000", headers=admin_token)
    assert missing.status_code == 404
    assert missing.is_json and error_fields(missing) == {"identifier"}
    for bad in ("13800139001", "fax:123", "phone:not-a-number", "wechat_openid:o6_abc"):
        response = client.get(
            "/api/v1/profiles", query_string={"identifier": bad}, headers=admin_token
        )
        assert response.status_code == 422, bad
        assert error_fields(response) == {"identifier"}, (bad, response.json)
    assert client.get("/api/v1/profiles/999999", headers=admin_token).status_code == 404


def test_search_by_phone_name_openid_and_id_lists_no_personal_data(client, admin_token, patient):
    for query in ("138 0013 9001", "李娜", "o6_abc", str(patient)):
        response = client.get("/api/v1/profiles", query_string={"q": query}, headers=admin_token)
        assert response.status_code == 200
        assert [p["id"] for p in response.json["items"]] == [patient], query
        text = response.get_data(as_text=True)
        assert "李娜" not in text and "9001" not in text
        assert response.json["items"][0]["identifier_types"] == [
            "phone",
            "user_id",
            "wechat_openid",
        ]
    nobody = client.get("/api/v1/profiles?q=王伟", headers=admin_token)
    assert nobody.json["items"] == []


def test_list_pages_by_kind(app, client, admin_token, source_id):
    for i in range(5):
        send(app, source_id, {"type": "identify", "userId": f"p{i}"})
    send(app, source_id, {"type": "identify", "userId": "p5"})
    send(app, source_id, {"type": "identify", "userId": "doc", "context": {"profileKind": "hcp"}})
    seen, cursor, pages = [], None, 0
    while True:
        args = {"kind": "patient", "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/v1/profiles", query_string=args, headers=admin_token).json
        pages += 1
        seen += [p["id"] for p in page["items"]]
        assert all(p["kind"] == "patient" for p in page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == 6 and seen == sorted(seen)
    assert pages == 3  # 2 + 2 + 2: no empty page at the end


def test_reveal_pii_shows_personal_data_and_is_audited(client, admin_token, patient, app):
    response = client.get(f"/api/v1/profiles/{patient}?reveal=pii", headers=admin_token)
    assert response.status_code == 200
    assert response.json["pii"] == {"name": "李娜", "phone": PHONE}
    phones = [i["value"] for i in response.json["identifiers"] if i["type"] == "phone"]
    assert phones == ["+8613800139001"]
    assert audit_actions(app)[-1] == "profile.pii_view"
    with app.app_context():
        row = db.session.scalar(sa.select(AuditEntry).order_by(AuditEntry.id.desc()).limit(1))
        assert (row.actor_type, row.object_id) == ("token", str(patient))
        assert "李娜" not in json.dumps(row.details, ensure_ascii=False)


def test_marketer_reads_masked_profile_but_gets_403_on_reveal(client, marketer_token, patient, app):
    assert client.get(f"/api/v1/profiles/{patient}", headers=marketer_token).status_code == 200
    before = audit_actions(app)
    response = client.get(f"/api/v1/profiles/{patient}?reveal=pii", headers=marketer_token)
    assert response.status_code == 403 and response.is_json
    assert "李娜" not in response.get_data(as_text=True)
    assert "profile.pii_view" not in audit_actions(app)[len(before) :]
    bad = client.get(f"/api/v1/profiles/{patient}?reveal=everything", headers=marketer_token)
    assert bad.status_code == 422 and error_fields(bad) == {"reveal"}


def test_events_page_newest_first_each_event_exactly_once(app, client, admin_token, source_id):
    messages = [
        {"type": "track", "userId": "u1", "event": f"e{i}", "timestamp": at(i % 4)}
        for i in range(11)  # several events share a timestamp: the id breaks the tie
    ]
    send(app, source_id, *messages)
    with app.app_context():
        profile_id = db.session.scalar(sa.select(Profile.id))
        expected = [
            e.id
            for e in db.session.scalars(
                sa.select(Event).order_by(Event.timestamp.desc(), Event.id.desc())
            )
        ]
    seen, cursor, pages = [], None, 0
    while True:
        args = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        response = client.get(
            f"/api/v1/profiles/{profile_id}/events", query_string=args, headers=admin_token
        )
        assert response.status_code == 200
        page = response.json
        seen += [e["id"] for e in page["items"]]
        assert all(e["channel"] == "http" and e["source_id"] == source_id for e in page["items"])
        pages += 1
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == expected and len(expected) == 11 and pages == 4


@pytest.mark.parametrize("cursor", ["garbage", "WzFd", "eyJhIjoxfQ", "WyJub3QgYSB0aW1lIiwxXQ"])
def test_invalid_events_cursor_is_422_naming_cursor(client, admin_token, patient, cursor):
    response = client.get(
        f"/api/v1/profiles/{patient}/events", query_string={"cursor": cursor}, headers=admin_token
    )
    assert response.status_code == 422
    assert error_fields(response) == {"cursor"}


def test_merged_id_answers_with_the_survivor_and_says_so(client, admin_token, merged_pair):
    survivor, merged = merged_pair
    response = client.get(f"/api/v1/profiles/{merged}", headers=admin_token)
    assert response.status_code == 200
    body = response.json
    assert (body["id"], body["requested_id"], body["merged_into"]) == (survivor, merged, survivor)
    assert [(m["survivor_id"], m["merged_id"]) for m in body["merges"]] == [(survivor, merged)]
    assert body["merges"][0]["linked_by"] == ["phone"] and body["merges"][0]["undone_at"] is None
    events = client.get(f"/api/v1/profiles/{merged}/events", headers=admin_token).json
    assert [e["name"] for e in events["items"] if e["type"] == "track"] == ["visit"]


def test_unmerge_via_api_restores_both_profiles_and_is_audited(
    app, client, admin_token, merged_pair
):
    survivor, merged = merged_pair
    response = client.post(f"/api/v1/profiles/{merged}/unmerge", headers=admin_token)
    assert response.status_code == 200, response.json
    assert sorted(response.json["profile_ids"]) == sorted([survivor, merged])
    assert response.json["restored_id"] == merged
    restored = client.get(f"/api/v1/profiles/{merged}", headers=admin_token).json
    assert restored["id"] == merged and restored["merged_into"] is None
    assert client.get(f"/api/v1/profiles/{survivor}", headers=admin_token).json["id"] == survivor
    assert "profile.unmerge" in audit_actions(app)
    merge_id = response.json["merge_id"]
    again = client.post(
        f"/api/v1/profiles/{merged}/unmerge", json={"merge_id": merge_id}, headers=admin_token
    )
    assert again.status_code == 409 and error_fields(again) == {"merge_id"}
    nothing = client.post(f"/api/v1/profiles/{merged}/unmerge", headers=admin_token)
    assert nothing.status_code == 404
    wrong = client.post(
        f"/api/v1/profiles/{merged}/unmerge", json={"merge_id": "x"}, headers=admin_token
    )
    assert wrong.status_code == 422 and error_fields(wrong) == {"merge_id"}


def test_marketer_cannot_unmerge(app, client, marketer_token, merged_pair):
    survivor, merged = merged_pair
    response = client.post(f"/api/v1/profiles/{merged}/unmerge", headers=marketer_token)
    assert response.status_code == 403
    with app.app_context():
        assert db.session.get(Profile, merged).merged_into_id == survivor
    assert "profile.unmerge" not in audit_actions(app)


def test_merges_are_listed_newest_first_with_a_cursor(app, client, admin_token, source_id):
    for i in range(3):
        send(app, source_id, {"type": "identify", "anonymousId": f"a{i}"})
        send(app, source_id, {"type": "identify", "userId": f"u{i}"})
        send(app, source_id, {"type": "alias", "userId": f"u{i}", "previousId": f"a{i}"})
    first = client.get("/api/v1/merges?limit=2", headers=admin_token).json
    assert len(first["items"]) == 2 and first["next_cursor"]
    rest = client.get(
        "/api/v1/merges", query_string={"cursor": first["next_cursor"]}, headers=admin_token
    ).json
    ids = [m["id"] for m in first["items"] + rest["items"]]
    assert len(ids) == 3 and ids == sorted(ids, reverse=True) and rest["next_cursor"] is None


@pytest.fixture
def violations(app, source_id):
    send(
        app,
        source_id,
        {"type": "track", "userId": "u1", "event": "ok"},
        {
            "type": "track",
            "userId": "u2",
            "messageId": "m-2",
            "context": {"traits": {"phone": PHONE}},
        },
        {"type": "teleport", "userId": "u1", "messageId": "m-3"},
    )


def test_violations_list_shows_what_broke_but_not_the_payload(
    client, marketer_token, source_id, violations
):
    response = client.get(f"/api/v1/violations?source_id={source_id}", headers=marketer_token)
    assert response.status_code == 200
    items = response.json["items"]
    assert [(v["index"], v["field"], v["message_id"], v["rejected"]) for v in items] == [
        (2, "type", "m-3", True),
        (1, "event", "m-2", True),
    ]
    assert items[1]["event_type"] == "track" and items[1]["reason"]
    assert all("payload" not in v for v in items)
    assert PHONE not in response.get_data(as_text=True)
    other = client.get("/api/v1/violations?source_id=src_other", headers=marketer_token)
    assert other.json["items"] == []
    paged = client.get("/api/v1/violations?limit=1", headers=marketer_token).json
    assert [v["index"] for v in paged["items"]] == [2] and paged["next_cursor"]


def test_violation_payload_reveal_is_admin_only_and_audited(
    app, client, admin_token, marketer_token, violations
):
    listed = client.get("/api/v1/violations", headers=admin_token).json["items"]
    violation_id = next(v["id"] for v in listed if v["message_id"] == "m-2")
    plain = client.get(f"/api/v1/violations/{violation_id}", headers=marketer_token)
    assert plain.status_code == 200 and "payload" not in plain.json
    refused = client.get(
        f"/api/v1/violations/{violation_id}?reveal=payload", headers=marketer_token
    )
    assert refused.status_code == 403
    assert "violation.payload_view" not in audit_actions(app)
    revealed = client.get(f"/api/v1/violations/{violation_id}?reveal=payload", headers=admin_token)
    assert revealed.status_code == 200
    assert revealed.json["payload"]["context"]["traits"]["phone"] == PHONE
    assert revealed.json["payload"]["messageId"] == "m-2"
    assert audit_actions(app)[-1] == "violation.payload_view"
    assert client.get("/api/v1/violations/999999", headers=admin_token).status_code == 404


def test_rotate_key_retires_the_old_write_key(app, client, admin_token, marketer_token):
    created = client.post(
        "/api/v1/sources", json={"name": "官网", "kind": "http"}, headers=admin_token
    ).json
    old_key = created["write_key"]
    assert (
        client.post(
            f"/api/v1/sources/{created['id']}/rotate-key", headers=marketer_token
        ).status_code
        == 403
    )
    response = client.post(f"/api/v1/sources/{created['id']}/rotate-key", headers=admin_token)
    assert response.status_code == 200
    new_key = response.json["write_key"]
    assert new_key.startswith("wk_") and new_key != old_key
    with app.app_context():
        assert source_for_write_key(old_key) is None
        assert source_for_write_key(new_key).id == created["id"]
    assert "source.rotate_key" in audit_actions(app)
    listed = client.get("/api/v1/sources", headers=admin_token).json
    assert new_key not in json.dumps(listed)
    missing = client.post("/api/v1/sources/src_nope/rotate-key", headers=admin_token)
    assert missing.status_code == 404


def test_source_list_has_counts_last_event_and_default_profile_kind(app, client, admin_token):
    created = client.post(
        "/api/v1/sources",
        json={"name": "医生端", "kind": "http", "default_profile_kind": "hcp"},
        headers=admin_token,
    ).json
    assert created["default_profile_kind"] == "hcp"
    send(
        app,
        created["id"],
        {"type": "track", "userId": "d1", "event": "a", "timestamp": at(0)},
        {"type": "track", "userId": "d1", "event": "b", "timestamp": at(1)},
        {"type": "track", "userId": "d1"},
    )
    with app.app_context():
        assert db.session.scalar(sa.select(Profile.kind)) == "hcp"
    listed = client.get("/api/v1/sources", headers=admin_token).json
    row = next(s for s in listed if s["id"] == created["id"])
    assert (row["events"], row["violations"], row["default_profile_kind"]) == (2, 1, "hcp")
    assert row["last_event_at"] is not None
    bad = client.post(
        "/api/v1/sources",
        json={"name": "x", "kind": "http", "default_profile_kind": "robot"},
        headers=admin_token,
    )
    assert bad.status_code == 422 and error_fields(bad) == {"default_profile_kind"}


def test_openapi_documents_the_profile_endpoints(client):
    spec = client.get("/api/openapi.json").json
    for path in (
        "/api/v1/profiles",
        "/api/v1/profiles/{profile_id}",
        "/api/v1/profiles/{profile_id}/events",
        "/api/v1/profiles/{profile_id}/unmerge",
        "/api/v1/merges",
        "/api/v1/violations",
        "/api/v1/violations/{violation_id}",
        "/api/v1/sources/{source_id}/rotate-key",
    ):
        assert path in spec["paths"], path
    assert {"Profile", "ProfilePage", "EventPage", "ViolationPage"} <= set(
        spec["components"]["schemas"]
    )
    assert "payload" not in spec["components"]["schemas"]["Violation"]["properties"]
