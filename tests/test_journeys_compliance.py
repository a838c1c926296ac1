"""Adversarial: a patient journey cannot deliver what the rules forbid, whatever happens after
it was published; and a person's journeys are in their export and gone after erasure."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from cdp.actors import SYSTEM
from cdp.content import operations as ops
from cdp.db import db
from cdp.models.content import ContentVersion
from cdp.privacy import erasure
from cdp.privacy.export import export_person
from cdp.sources import create_source
from journeys import service
from journeys.channels import CHANNELS
from journeys.models import Delivery, JourneyInstance, JourneyStepLog
from tests.journey_helpers import (
    PLAIN_SMS,
    RecordingSms,
    deliveries,
    later,
    person,
    run,
    sms_content,
    track,
)
from tests.test_content import Team, approved, sms_fields


@pytest.fixture
def team(app_ctx):
    return Team(app_ctx)


@pytest.fixture
def source(app_ctx):
    return create_source(SYSTEM, "POS", "http")[0]


@pytest.fixture(autouse=True)
def sms(app, monkeypatch):
    RecordingSms.calls, RecordingSms.fail_with = [], None
    monkeypatch.setitem(CHANNELS, "sms", RecordingSms)
    app.config["JOURNEY_GLOBAL_CONTROL_PERCENT"] = 0
    app.config["JOURNEY_QUIET_HOURS"] = ("00:00", "00:00")
    return RecordingSms


def waiting_send(item_id: int) -> dict:
    return {
        "category": "service",
        "audience": {"kind": "patient"},
        "trigger": {"type": "event", "event": "signed_up"},
        "start": "wait",
        "steps": [
            {"id": "wait", "type": "wait", "duration": "1d", "next": "send"},
            {"id": "send", "type": "send", "channel": "sms", "content_id": item_id},
        ],
    }


def published(team, definition: dict):
    journey = service.create_journey(team.marketer, "合规测试", definition)
    service.publish(team.marketer, journey.id)
    return journey


def test_rx_content_is_refused_at_validation_in_a_patient_journey(team):
    version = approved(team, name="Rx 资料", **sms_fields(
        text="【康护】新适应症资料已更新。", product_class="rx", audience="hcp",
        products=["恩格列净"]))  # fmt: skip
    journey = service.create_journey(team.marketer, "Rx", waiting_send(version.item_id))
    with pytest.raises(service.InvalidDefinition) as refused:
        service.publish(team.marketer, journey.id)
    assert "rx_to_patient" in {p["code"] for p in refused.value.problems}


def test_content_swapped_to_rx_after_publishing_is_not_sent(team, source, sms):
    item_id, _ = sms_content(team, text=PLAIN_SMS)
    journey = published(team, waiting_send(item_id))
    person(source, "swap")
    track(source, "swap", "signed_up")
    run()
    # Someone edits the approved, pinned version behind the platform's back.
    version = db.session.scalar(sa.select(ContentVersion).where(ContentVersion.item_id == item_id))
    version.product_class = "rx"
    db.session.commit()
    run(later(days=1, minutes=1))
    (row,) = deliveries(journey_id=journey.id)
    assert row.status == "skipped"
    assert row.reason in ("changed_after_approval", "rx_to_patient")
    assert sms.calls == []


def test_withdrawn_content_stops_pending_sends(team, source, sms):
    item_id, version_id = sms_content(team, text=PLAIN_SMS)
    journey = published(team, waiting_send(item_id))
    person(source, "withdrawn")
    track(source, "withdrawn", "signed_up")
    run()
    ops.withdraw(team.reviewer, version_id, "label changed")
    run(later(days=1, minutes=1))
    assert [(d.status, d.reason) for d in deliveries(journey_id=journey.id)] == [
        ("skipped", "withdrawn")
    ]
    assert sms.calls == []


def test_export_has_journeys_and_deliveries_and_erasure_leaves_none(team, source, sms):
    item_id, _ = sms_content(team, text=PLAIN_SMS)
    journey = published(team, waiting_send(item_id))
    pid = person(source, "pipl-user", phone="13800138123")
    track(source, "pipl-user", "signed_up")
    run(later(days=1, minutes=1))
    bundle = export_person(SYSTEM, pid)
    section = bundle["sections"]["journeys"] if "sections" in bundle else bundle["journeys"]
    kinds = [row["kind"] for row in section]
    assert kinds == ["journey", "delivery"]
    assert section[1]["status"] == "sent" and "预约" in section[1]["message"]["text"]
    erasure.run_erasure(erasure.request_erasure(SYSTEM, pid).id)
    for model in (JourneyInstance, Delivery, JourneyStepLog):
        assert db.session.scalar(sa.select(sa.func.count()).select_from(model)) == 0, model
    assert journey.id
