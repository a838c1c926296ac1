"""Adversarial: every path by which forbidden content could reach a person is refused.

Rx to patients (journey validation, send time, content swapped after approval), withdrawn
and expired content, sends after consent withdrawal or a PIPL Art. 24 refusal, minors,
service-only channels, subscribe credits and channel field rules.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from cdp.actors import SYSTEM
from cdp.consent import record_consent
from cdp.content import operations as ops
from cdp.content.guards import (
    SendBlocked,
    check_journey_content,
    check_sendable,
    journey_content_problems,
    prepare_send,
    send_problems,
)
from cdp.db import db, utcnow
from cdp.exceptions import ValidationFailed
from cdp.ingest.pipeline import ingest
from cdp.ingest.tasks import process_batch
from cdp.models import Profile
from cdp.models.content import ContentVersion
from cdp.sources import create_source
from tests.test_content import SMS_MARKETING, Team, approved, sms_fields

NOW = utcnow()


@pytest.fixture
def team(app_ctx):
    return Team(app_ctx)


@pytest.fixture
def source(app_ctx):
    return create_source(SYSTEM, "患者服务", "http")[0]


def person(source, user_id: str, kind="patient", license=None, **traits) -> Profile:
    context = {"profileKind": kind}
    if license:
        context["externalIds"] = [{"type": "hcp_license", "id": license}]
    result = ingest(
        source,
        [{"type": "identify", "userId": user_id, "traits": traits, "context": context}],
    )
    process_batch(result.outbox_id)
    return db.session.get(Profile, result.profile_ids[0])


def send_event(source, user_id: str, name: str, **properties):
    result = ingest(
        source, [{"type": "track", "userId": user_id, "event": name, "properties": properties}]
    )
    process_batch(result.outbox_id)


@pytest.fixture
def patient(source):
    return person(source, "p1", name="王芳", phone="13800138001", birth_date="1980-05-01")


@pytest.fixture
def doctor(source):
    return person(source, "d1", kind="hcp", license="110101198001011234", name="李医生")


def rx(team, audience="hcp"):
    fields = sms_fields(
        text="【康护】{{ profile.name }}医生，新适应症资料已更新。",
        product_class="rx",
        products=["恩格列净"],
        audience=audience,
    )
    return approved(team, name="Rx 学术资料", **fields)


def reasons(problems) -> set[str]:
    return {code for code, _ in problems}


def test_rx_content_never_reaches_a_patient_at_validation_or_send_time(team, patient, doctor):
    version = rx(team)
    # Journey validation: a patient or mixed journey may not use it at all.
    for audience in ("patient", "both", None):
        with pytest.raises(SendBlocked) as err:
            check_journey_content(version, audience, channel="sms")
        assert err.value.reason == "rx_to_patient"
    check_journey_content(version, "hcp", channel="sms")
    # Send time: a patient slipping into an HCP journey is still refused.
    with pytest.raises(SendBlocked) as err:
        check_sendable(version, patient, "sms", NOW)
    assert err.value.reason == "rx_to_patient"
    check_sendable(version, doctor, "sms", NOW)
    message = prepare_send(version.id, doctor.id, "sms", NOW)
    assert message["text"].startswith("【康护】李医生")


def test_rx_needs_a_verified_doctor_not_a_self_declared_one(team, source):
    self_declared = person(source, "d2", kind="hcp", name="自称医生")
    with pytest.raises(SendBlocked) as err:
        check_sendable(rx(team), self_declared, "sms", NOW)
    assert err.value.reason == "rx_unverified_hcp"


def test_rx_content_cannot_even_be_approved_for_patients(team):
    version = ops.create_item(
        team.marketer, "x", "sms", **sms_fields(product_class="rx", products=["A"])
    )
    with pytest.raises(ValidationFailed) as err:
        ops.submit(team.marketer, version.id)
    assert "Rx" in err.value.message


def test_content_swapped_after_approval_is_refused(team, patient, doctor):
    version = approved(team)
    check_sendable(version, patient, "sms", NOW)
    # Someone edits the approved row behind the workflow's back (SQL console, bad migration).
    db.session.execute(
        sa.update(ContentVersion)
        .where(ContentVersion.id == version.id)
        .values(body={"text": "【康护】限时抢购处方药！回T退订"})
    )
    db.session.commit()
    db.session.refresh(version)
    assert "changed_after_approval" in reasons(send_problems(version, patient, "sms", NOW))
    with pytest.raises(SendBlocked):
        check_journey_content(version, "patient", "sms")
    # Flipping an approved Rx version to "non_drug" to reach patients is caught the same way.
    rx_version = rx(team)
    db.session.execute(
        sa.update(ContentVersion)
        .where(ContentVersion.id == rx_version.id)
        .values(product_class="non_drug", audience="both")
    )
    db.session.commit()
    db.session.refresh(rx_version)
    with pytest.raises(SendBlocked) as err:
        check_sendable(rx_version, patient, "sms", NOW)
    assert err.value.reason == "changed_after_approval"


def test_withdrawn_expired_and_unapproved_content_is_not_sent(team, patient):
    version = approved(team)
    ops.withdraw(team.reviewer, version.id, "label change")
    with pytest.raises(SendBlocked) as err:
        check_sendable(version, patient, "sms", NOW)
    assert err.value.reason == "withdrawn"
    assert "withdrawn" in reasons(journey_content_problems(version, "patient", "sms"))
    later = approved(team, name="b")
    with pytest.raises(SendBlocked) as err:
        check_sendable(later, patient, "sms", NOW + timedelta(days=365))
    assert err.value.reason == "expired"
    draft = ops.create_item(team.marketer, "c", "sms", **sms_fields())
    with pytest.raises(SendBlocked) as err:
        check_sendable(draft, patient, "sms", NOW)
    assert err.value.reason == "not_approved"


def marketing_sms(team):
    return approved(team, name="会员日", **sms_fields(text=SMS_MARKETING, category="marketing"))


def test_marketing_needs_consent_and_stops_after_an_sms_opt_out_reply(team, source, patient):
    version = marketing_sms(team)
    with pytest.raises(SendBlocked) as err:
        check_sendable(version, patient, "sms", NOW)
    assert err.value.reason == "no_marketing_consent"
    send_event(source, "p1", "consents_updated", consents={"sms": True})
    assert prepare_send(version, patient, "sms", NOW)["text"].startswith("【康护】王芳您好")
    send_event(source, "p1", "sms_reply", text=" td ")
    with pytest.raises(SendBlocked) as err:
        check_sendable(version, patient, "sms", utcnow())
    assert err.value.reason == "no_marketing_consent"


def test_service_content_needs_no_marketing_consent(team, patient):
    check_sendable(approved(team), patient, "sms", NOW)


def test_pipl_art_24_refusal_blocks_every_marketing_send(team, source, patient):
    version = marketing_sms(team)
    record_consent(SYSTEM, patient.id, "marketing", "*", "granted")
    db.session.commit()
    check_sendable(version, patient, "sms", NOW)
    send_event(source, "p1", "consents_updated", consents={"automated_marketing": False})
    with pytest.raises(SendBlocked) as err:
        check_sendable(version, patient, "sms", utcnow())
    assert err.value.reason == "automated_marketing_refused"
    check_sendable(approved(team, name="svc"), patient, "sms", utcnow())  # service still goes


def test_minors_get_marketing_only_with_guardian_consent(team, source):
    child = person(source, "kid", birth_date=(NOW.date().replace(year=NOW.year - 10)).isoformat())
    record_consent(SYSTEM, child.id, "marketing", "*", "granted")
    db.session.commit()
    version = marketing_sms(team)
    with pytest.raises(SendBlocked) as err:
        check_sendable(version, child, "sms", NOW)
    assert err.value.reason == "minor_without_guardian_consent"
    record_consent(SYSTEM, child.id, "guardian", "*", "granted")
    db.session.commit()
    check_sendable(version, child, "sms", NOW)
    fourteen = datetime(NOW.year + 4, 12, 31, tzinfo=UTC)
    assert "minor_without_guardian_consent" not in reasons(
        send_problems(version, child, "sms", fourteen)
    )


def test_wechat_template_channel_is_service_only_even_if_forced(team, patient):
    body = {"template_id": "TPL", "fields": {"keyword1": "{{ context.drug }}"}}
    version = approved(team, kind="wechat_template", name="t", **sms_fields(body=body))
    check_sendable(version, patient, "wechat", NOW)
    with pytest.raises(SendBlocked) as err:
        check_sendable(version, patient, "sms", NOW)
    assert err.value.reason == "wrong_channel"
    message = prepare_send(version, patient, "wechat", NOW, {"drug": "二甲双胍缓释片"})
    assert message["data"] == {"keyword1": {"value": "二甲双胍缓释片"}}
    with pytest.raises(SendBlocked) as err:
        prepare_send(version, patient, "wechat", NOW, {"drug": "一" * 21})
    assert err.value.reason == "field_rules"
    with pytest.raises(SendBlocked) as err:
        prepare_send(version, patient, "wechat", NOW, {})
    assert err.value.reason == "render_failed"


def test_subscribe_messages_need_and_consume_a_per_template_credit(team, source, patient):
    body = {
        "template_id": "MP-T1",
        "page": "pages/refill",
        "fields": {"thing1": "{{ context.drug }}"},
    }
    version = approved(team, kind="miniprogram_subscribe", name="mp", **sms_fields(body=body))
    with pytest.raises(SendBlocked) as err:
        check_sendable(version, patient, "miniprogram", NOW)
    assert err.value.reason == "no_subscribe_credit"
    send_event(source, "p1", "subscribe_accepted", template_id="MP-T1")
    prepare_send(version, patient, "miniprogram", NOW, {"drug": "胰岛素"})
    with pytest.raises(SendBlocked) as err:  # one accept, one message
        prepare_send(version, patient, "miniprogram", NOW, {"drug": "胰岛素"})
    assert err.value.reason == "no_subscribe_credit"
    send_event(source, "p1", "subscribe_accepted", template_ids=["MP-T1", "MP-T2"])
    send_event(source, "p1", "subscribe_refused", template_id="MP-T1")
    assert "no_subscribe_credit" in reasons(send_problems(version, patient, "miniprogram", NOW))


def test_journey_validation_names_missing_context_variables(team):
    version = approved(team)
    problems = journey_content_problems(version, "patient", "sms", context_keys={"drug"})
    assert ("missing_variable", "the journey does not provide context.refill_date") in problems
    check_journey_content(version, "patient", "sms", context_keys={"drug", "refill_date"})
