"""Live-stream webhook: signed join/leave/quiz events reach doctors' attendance and points;
replays, bad signatures, stale requests and malformed items are refused, nothing stored."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import orjson
import pytest
import sqlalchemy as sa

from cdp.actors import SYSTEM
from cdp.db import db, utcnow
from cdp.hcp import doctors
from cdp.ingest.tasks import process_pending
from cdp.models import Event, Profile
from cdp.models.hcp import Award, Participant
from cdp.sources import create_source, endpoint_urls, get_source
from connectors import base
from connectors.replay import sign
from tests.test_hcp_engagement import RIGHT, Clinic

SECRET = "live-secret-0123456789abcdef"


@pytest.fixture
def world(app):
    base.forget_sources()
    # Built in its own app context: an outer one would share flask.g between requests.
    with app.app_context():
        clinic = Clinic(app)
        doctor = clinic.doctor("d1")
        meeting_id = clinic.meeting().id
        options = {"secret": SECRET, "platform": "vhall"}
        source_id = create_source(SYSTEM, "直播平台", "livestream", options, "hcp")[0].id
        licence = doctors.licence_of(doctor)
    yield {"doctor": doctor, "meeting": meeting_id, "source": source_id, "licence": licence}
    base.forget_sources()


def item(kind, meeting_id, doctor, minutes_ago=0.0, **extra) -> dict:
    at = utcnow() - timedelta(minutes=minutes_ago)
    return {"type": kind, "meeting_id": meeting_id, "doctor": doctor, "at": at.isoformat(),
            **extra}  # fmt: skip


def post(client, source_id, payload, secret=SECRET, nonce=None, timestamp=None):
    body = orjson.dumps(payload)
    timestamp = timestamp or str(int(time.time()))
    nonce = nonce or uuid.uuid4().hex
    headers = {
        "X-Live-Timestamp": timestamp,
        "X-Live-Nonce": nonce,
        "X-Live-Signature": sign(secret, timestamp, nonce, body),
        "Content-Type": "application/json",
    }
    return client.post(f"/connectors/livestream/{source_id}", data=body, headers=headers)


def stored(app, source_id) -> list[Event]:
    with app.app_context():
        query = sa.select(Event).where(Event.source_id == source_id).order_by(Event.id)
        return list(db.session.scalars(query))


def test_join_leave_and_quiz_reach_the_doctors_attendance_and_points(app, client, world):
    doctor = {"license": world["licence"]}
    m = world["meeting"]
    payload = {"events": [
        item("register", m, doctor, 70, id="r-1"),
        item("join", m, doctor, 50, id="j-1"),
        item("leave", m, doctor, 30, id="l-1"),  # the connection dropped
        item("join", m, doctor, 28, id="j-2"),
        item("leave", m, doctor, 5, id="l-2"),
        item("quiz_submit", m, doctor, 4, id="q-1", answers=RIGHT),
    ]}  # fmt: skip
    answer = post(client, world["source"], payload)
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["accepted"] == 6
    with app.app_context():
        process_pending()
        row = db.session.scalars(sa.select(Participant).where(Participant.meeting_id == m)).one()
        assert row.profile_id == world["doctor"]
        assert row.registered_at is not None
        assert row.attended_seconds // 60 in (42, 43)  # 20 + 23 minutes, seconds apart
        assert row.completed_at is not None
        award = db.session.scalars(sa.select(Award).where(Award.meeting_id == m)).one()
        assert (award.profile_id, award.status) == (world["doctor"], "awarded")
    # The platform retries the same events in a new request: nothing changes.
    again = post(client, world["source"], payload)
    assert again.get_json()["duplicates"] == 6
    assert len(stored(app, world["source"])) == 6


def test_a_new_doctor_by_licence_attends_but_gets_no_points_unverified(app, client, world):
    m, newcomer = world["meeting"], {"license": "110000000000777"}
    payload = {"events": [item("join", m, newcomer, 45), item("leave", m, newcomer, 2),
                          item("quiz_submit", m, newcomer, 1, answers={"q1": 0})]}  # fmt: skip
    assert post(client, world["source"], payload).status_code == 200
    with app.app_context():
        process_pending()
        row = db.session.scalars(sa.select(Participant).where(Participant.meeting_id == m)).one()
        assert db.session.get(Profile, row.profile_id).kind == "hcp"
        assert row.attended_seconds // 60 == 43
        award = db.session.scalars(sa.select(Award).where(Award.meeting_id == m)).one()
        assert award.status == "refused" and award.reason.startswith("not_verified")


def test_unknown_meetings_are_skipped_and_the_endpoint_url_is_shown(app, client, world):
    payload = {"events": [item("join", 99999, {"unionid": "o6_bmasdasdsad6_2sgVt7hMZOPfL"})]}
    answer = post(client, world["source"], payload).get_json()
    assert answer["accepted"] == 0
    assert answer["skipped"][0]["field"] == "events.0.meeting_id"
    with app.app_context():
        urls = endpoint_urls(get_source(world["source"]), "https://cdp.example.cn/")
    assert urls == {"events": f"https://cdp.example.cn/connectors/livestream/{world['source']}"}


def test_a_replayed_request_is_refused(app, client, world):
    payload = {"events": [item("join", world["meeting"], {"license": world["licence"]}, 10)]}
    assert post(client, world["source"], payload, nonce="nonce-0001").status_code == 200
    replayed = post(client, world["source"], payload, nonce="nonce-0001")
    assert replayed.status_code == 409
    assert "already used" in replayed.get_json()["message"]
    assert len(stored(app, world["source"])) == 1


def test_bad_signatures_and_stale_requests_are_refused(app, client, world):
    payload = {"events": [item("join", world["meeting"], {"license": world["licence"]}, 10)]}
    forged = post(client, world["source"], payload, secret="not-the-secret-at-all")
    assert forged.status_code == 401
    assert "signature" in forged.get_json()["message"]
    stale = post(client, world["source"], payload, timestamp=str(int(time.time()) - 3600))
    assert stale.status_code == 401
    assert "timestamp" in stale.get_json()["message"]
    unsigned = client.post(f"/connectors/livestream/{world['source']}", json=payload)
    assert unsigned.status_code == 401
    assert stored(app, world["source"]) == []


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"type": "watch"}, "events.1.type"),
        ({"meeting_id": "abc"}, "events.1.meeting_id"),
        ({"at": "yesterday"}, "events.1.at"),
        ({"doctor": {"license": "12345"}}, "events.1.doctor.license"),
        ({"doctor": {"openid": "oAbc"}}, "events.1.doctor.app_id"),
        ({"doctor": {}}, "events.1.doctor"),
        ({"type": "quiz_submit", "answers": {"q1": "A"}}, "events.1.answers.q1"),
    ],
)
def test_a_malformed_item_is_a_400_naming_it_and_nothing_is_stored(app, client, world, bad, field):
    good = item("join", world["meeting"], {"license": world["licence"]}, 10)
    payload = {"events": [good, {**good, **bad}]}
    answer = post(client, world["source"], payload)
    assert answer.status_code == 400
    assert field in answer.get_json()["errors"]
    assert stored(app, world["source"]) == []


def test_an_oversized_body_is_refused(app, client, world):
    payload = {"events": [], "padding": "x" * (600 * 1024)}
    assert post(client, world["source"], payload).status_code == 413
