"""Delivery receipts: the SMS status callback (auth, ingestion, dedupe) and WeChat
TEMPLATESENDJOBFINISH pushes turning sent deliveries into delivered or failed."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from cdp.actors import SYSTEM
from cdp.db import db, utcnow
from cdp.ingest.pipeline import ingest
from cdp.models import Event, Profile
from cdp.sources import create_source
from connectors.base import forget_sources
from journeys.channels.receipts import process_events
from journeys.models import ChannelUnreachable, Delivery
from tests.test_connector_wechat import APP_ID, OPENID, event_xml, plain_query
from tests.test_connector_wechat import make_source as make_wechat_source

TOKEN = "sms-callback-token-0123456789"
PHONE = "13800138001"


@pytest.fixture(autouse=True)
def _no_cached_sources():
    forget_sources()
    yield
    forget_sources()


@pytest.fixture
def patient(app):
    with app.app_context():
        source = create_source(SYSTEM, "患者服务", "http")[0]
        message = {
            "type": "identify",
            "userId": "p1",
            "traits": {"phone": PHONE},
            "context": {
                "externalIds": [{"type": "wechat_openid", "id": OPENID, "collection": APP_ID}]
            },
        }
        return ingest(source, [message]).profile_ids[0]


@pytest.fixture
def sms_source(app):
    app.config["SMS_CALLBACK_TOKEN"] = TOKEN
    with app.app_context():
        return create_source(SYSTEM, "短信网关", "sms", {})[0].id


def delivery(app, profile_id, key, channel="sms", status="sent", provider_id=None) -> None:
    with app.app_context():
        db.session.add(
            Delivery(
                key=key,
                step_id="remind",
                profile_id=profile_id,
                action="send",
                channel=channel,
                status=status,
                provider_id=provider_id,
                sent_at=utcnow(),
            )
        )
        db.session.commit()


def statuses(app) -> dict[str, tuple]:
    with app.app_context():
        rows = db.session.execute(
            sa.select(Delivery.key, Delivery.status, Delivery.reason, Delivery.delivered_at)
        )
        return {key: (status, reason, at is not None) for key, status, reason, at in rows}


def process_all(app, name: str) -> int:
    """Run the receipt processor over every stored event called ``name`` (as the outbox would)."""
    with app.app_context():
        ids = list(db.session.scalars(sa.select(Event.id).where(Event.name == name)))
        return process_events(ids, [])


def report(biz_id, success=True, out_id="", err_code="DELIVERED", phone=PHONE) -> dict:
    return {
        "phone_number": phone,
        "success": success,
        "err_code": err_code,
        "err_msg": "用户接收成功" if success else "用户手机关机",
        "biz_id": biz_id,
        "out_id": out_id,
        "send_time": "2025-05-01 10:00:00",
        "report_time": "2025-05-01 10:00:05",
        "sms_size": "1",
    }


def post_reports(client, reports, token=TOKEN, path="/connectors/sms/reports"):
    query = {"token": token} if token else {}
    return client.post(path, query_string=query, data=json.dumps(reports))


# --- the SMS status callback --------------------------------------------------------------


def test_report_endpoint_needs_the_callback_token(client, app, sms_source):
    reports = [report("BIZ1")]
    assert post_reports(client, reports, token=None).status_code == 401
    assert post_reports(client, reports, token="forged-token-0000000000").status_code == 403
    headers = {"Authorization": "Bearer forged"}
    response = client.post("/connectors/sms/reports", data=json.dumps(reports), headers=headers)
    assert response.status_code == 403
    app.config["SMS_CALLBACK_TOKEN"] = ""  # not configured: nobody gets in
    assert post_reports(client, reports).status_code == 403
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Event)) == 0


def test_reports_become_events_and_replays_are_stored_once(client, app, sms_source, patient):
    body = [report("BIZ1", out_id="k1"), report("BIZ2", success=False, err_code="MK:0001")]
    response = post_reports(client, body)
    assert response.status_code == 200
    assert response.get_json()["code"] == 0 and response.get_json()["accepted"] == 2
    headers = {"Authorization": f"Bearer {TOKEN}"}
    again = client.post("/connectors/sms/reports", data=json.dumps(body), headers=headers)
    assert again.get_json()["duplicates"] == 2
    with app.app_context():
        events = db.session.scalars(sa.select(Event).order_by(Event.id)).all()
        reports = [e for e in events if e.name == "sms_delivery_report"]
        assert [e.message_id for e in reports] == ["sms:BIZ1:ok", "sms:BIZ2:MK:0001"]
        assert {e.profile_id for e in reports} == {patient}
        first = reports[0]
        assert first.properties["biz_id"] == "BIZ1" and first.properties["out_id"] == "k1"
        assert first.properties["delivered"] is True
        assert first.timestamp.isoformat().startswith("2025-05-01T02:00:05")  # Beijing time
        assert PHONE not in json.dumps(
            [e.properties for e in reports] + [e.context for e in reports]
        )


def test_reports_never_create_profiles(client, app, sms_source, patient):
    """A report about a number nobody holds (say, erased after the send) is dropped."""
    response = post_reports(client, [report("BIZ7", phone="13900139000"), report("BIZ8")])
    assert response.status_code == 200
    assert response.get_json()["accepted"] == 1
    assert response.get_json()["unknown_numbers"] == 1
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Profile)) == 1
        stored = db.session.scalars(
            sa.select(Event.message_id).where(Event.name == "sms_delivery_report")
        )
        assert list(stored) == ["sms:BIZ8:ok"]


def test_report_endpoint_refuses_bad_bodies(client, app, sms_source):
    assert post_reports(client, [{"phone_number": PHONE}]).status_code == 400  # no biz_id
    assert post_reports(client, "not json").status_code == 400
    big = [report(f"BIZ{n}") for n in range(1001)]
    assert post_reports(client, big).status_code in (400, 413)


def test_per_source_route_uses_the_sources_token(client, app, patient):
    with app.app_context():
        source = create_source(SYSTEM, "网关B", "sms", {"callback_token": "b" * 24})[0].id
    path = f"/connectors/sms/{source}/reports"
    assert post_reports(client, [report("BIZ9")], token=TOKEN, path=path).status_code == 403
    response = post_reports(client, [report("BIZ9")], token="b" * 24, path=path)
    assert response.status_code == 200 and response.get_json()["accepted"] == 1


def test_without_an_sms_source_reports_have_nowhere_to_go(client, app):
    app.config["SMS_CALLBACK_TOKEN"] = TOKEN
    assert post_reports(client, [report("BIZ1")]).status_code == 404


# --- receipts -> deliveries ---------------------------------------------------------------


def test_sms_receipts_update_deliveries(client, app, sms_source, patient):
    delivery(app, patient, "k1", provider_id="BIZ1")
    delivery(app, patient, "k2", provider_id="BIZ2")
    delivery(app, patient, "k3", status="sending")  # the BizId is not recorded yet: found by key
    delivery(app, patient, "k4", status="delivered", provider_id="BIZ4")
    delivery(app, patient, "k5", channel="wechat", provider_id="BIZ1")  # another channel
    body = [
        report("BIZ1", out_id="k1"),
        report("BIZ2", success=False, err_code="MK:0001", out_id="k2"),
        report("BIZ3", out_id="k3"),
        report("BIZ4", success=False, err_code="UNDELIV", out_id="k4"),
    ]
    assert post_reports(client, body).status_code == 200
    assert process_all(app, "sms_delivery_report") == 4
    assert statuses(app) == {
        "k1": ("delivered", None, True),
        "k2": ("failed", "not_delivered", False),
        "k3": ("delivered", None, True),
        "k4": ("delivered", None, False),  # never downgraded (nor touched)
        "k5": ("sent", None, False),
    }
    with app.app_context():
        row = db.session.scalar(sa.select(Delivery).where(Delivery.key == "k2"))
        assert "MK:0001" in row.detail
    # A late success for the failed one upgrades it; running everything again changes nothing.
    post_reports(client, [report("BIZ2", out_id="k2")])
    process_all(app, "sms_delivery_report")
    process_all(app, "sms_delivery_report")
    assert statuses(app)["k2"] == ("delivered", None, True)
    assert statuses(app)["k4"] == ("delivered", None, False)


def test_template_job_finished_marks_delivered_or_failed(client, app, patient):
    source = make_wechat_source(app)
    delivery(app, patient, "w1", channel="wechat", provider_id="200163836")
    delivery(app, patient, "w2", channel="wechat", provider_id="200163837")
    delivery(app, patient, "w3", channel="wechat", provider_id="200163838")
    pushes = [
        event_xml("TEMPLATESENDJOBFINISH", created=1700000001, MsgID="200163836", Status="success"),
        event_xml(
            "TEMPLATESENDJOBFINISH",
            created=1700000002,
            MsgID="200163837",
            Status="failed: system failed",
        ),
        event_xml(
            "TEMPLATESENDJOBFINISH",
            created=1700000003,
            MsgID="200163838",
            Status="failed:user block",
        ),
    ]
    for xml in pushes:
        response = client.post(f"/connectors/wechat/{source}", query_string=plain_query(), data=xml)
        assert response.status_code == 200
    assert process_all(app, "template_delivery") == 3
    assert statuses(app) == {
        "w1": ("delivered", None, True),
        "w2": ("failed", "not_delivered", False),
        "w3": ("failed", "user_blocked", False),
    }
    with app.app_context():
        [blocked] = db.session.scalars(sa.select(ChannelUnreachable)).all()
        assert (blocked.profile_id, blocked.channel) == (patient, "wechat")
    assert process_all(app, "template_delivery") == 3  # idempotent
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(ChannelUnreachable)) == 1
    assert statuses(app)["w1"] == ("delivered", None, True)


def test_a_td_reply_withdraws_sms_marketing_consent(client, app, sms_source, patient):
    """SMS upstream replies (SmsUpReport): "TD" is an opt-out, stored once, never a profile."""
    from cdp.consent import has_consent, record_consent
    from cdp.ingest.tasks import process_pending

    with app.app_context():
        from datetime import timedelta

        record_consent(
            SYSTEM, patient, "marketing", "sms", "granted", utcnow() - timedelta(hours=1)
        )
        db.session.commit()
    from datetime import datetime
    from zoneinfo import ZoneInfo

    sent = datetime.now(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m-%d %H:%M:%S")  # after the grant
    reply = {"phone_number": PHONE, "content": " TD ", "send_time": sent,
             "sign_name": "康护", "dest_code": "01", "sequence_id": 9001}  # fmt: skip
    stranger = {**reply, "phone_number": "13900139000", "sequence_id": 9002}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert client.post("/connectors/sms/replies", data="[]").status_code == 401
    first = client.post("/connectors/sms/replies", data=json.dumps([reply, stranger]),
                        headers=headers)  # fmt: skip
    assert first.status_code == 200
    assert (first.get_json()["accepted"], first.get_json()["unknown_numbers"]) == (1, 1)
    again = client.post(f"/connectors/sms/{sms_source}/replies?token={TOKEN}",
                        data=json.dumps([reply]))  # fmt: skip
    assert again.get_json()["duplicates"] == 1
    bad = client.post("/connectors/sms/replies", data=json.dumps([{"content": "TD"}]),
                      headers=headers)  # fmt: skip
    assert bad.status_code == 400
    with app.app_context():
        process_pending()
        assert not has_consent(patient, "marketing", "sms")
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Profile)) == 1
