"""The purchase-line projection: written on ingest, by the seed and the migration, kept in
step with merges, unmerges and erasure, and read by purchase rules with the same answers."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa

from cdp.actors import SYSTEM
from cdp.consent import record_consent
from cdp.db import db
from cdp.identity.merges import unmerge
from cdp.ingest.pipeline import ingest
from cdp.ingest.tasks import process_batch
from cdp.models import Event, Merge, Profile, PurchaseLine
from cdp.models.purchases import backfill, lines_of
from cdp.privacy import erasure
from cdp.sources import create_source
from segments import realtime, service
from segments.compiler import compile_query
from segments.conditions import Context
from segments.reference import reference_members

T0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
ITEMS = [
    {"drug_code": "D001", "rx": True, "qty": 2, "days_of_supply": 60, "unit_price": 98.5},
    {"drug_code": "D017", "rx": False, "qty": 1, "price": 25.0},
    "not an item",
]


@pytest.fixture
def source(app_ctx):
    return create_source(SYSTEM, "药房", "http")[0]


def send(source, *messages):
    result = ingest(source, list(messages))
    if result.outbox_id:
        process_batch(result.outbox_id)
    return result


def purchase(user: str, items=ITEMS, total=221.0, key: str = "userId") -> dict:
    properties = {"items": items, "total_cny": total}
    return {"type": "track", key: user, "event": "pos_purchase", "timestamp": T0.isoformat(),
            "properties": properties}  # fmt: skip


def lines() -> list[PurchaseLine]:
    db.session.expire_all()
    return list(
        db.session.scalars(
            sa.select(PurchaseLine).order_by(PurchaseLine.event_id, PurchaseLine.line)
        )
    )


def test_ingested_purchases_are_projected_line_by_line(source):
    send(source, purchase("u1"), {"type": "track", "userId": "u1", "event": "article_read"})
    first, second, third = lines()
    pid = db.session.scalar(sa.select(Profile.id))
    assert (first.line, first.profile_id, first.event_name) == (1, pid, "pos_purchase")
    assert (first.drug_code, first.rx, first.quantity, first.days_of_supply) == (
        "D001",
        True,
        2,
        60,
    )
    assert (first.unit_price, first.amount, first.total) == (98.5, 197.0, 221.0)
    assert first.runs_out == date(2026, 3, 1) + timedelta(days=60)  # the local date, plus supply
    assert (second.drug_code, second.rx, second.unit_price, second.runs_out) == (
        "D017", False, 25.0, None,
    )  # fmt: skip
    # A scalar where an item should be: a line with nothing known about it.
    assert (third.line, third.drug_code, third.rx, third.total) == (3, None, None, 221.0)


def test_purchases_without_item_lines_get_one_row_and_reprocessing_changes_nothing(source):
    result = send(source, purchase("u1", items="none", total="12"), purchase("u2", items=[]))
    rows = [(r.line, r.drug_code, r.total) for r in lines()]
    assert rows == [(0, None, None), (0, None, 221.0)]  # "12" is a string, not a number
    event_ids = list(db.session.scalars(sa.select(Event.id)))
    realtime.process_events(event_ids, [])  # a batch processed twice
    assert [(r.line, r.drug_code, r.total) for r in lines()] == rows
    assert result.outbox_id


def test_lines_follow_their_events_through_merge_and_unmerge(source):
    send(source, {"type": "identify", "anonymousId": "a1", "traits": {"phone": "13800139001"}})
    send(source, purchase("a1", key="anonymousId"), purchase("m7"))
    owners = {line.event_id: line.profile_id for line in lines()}
    assert len(set(owners.values())) == 2
    send(source, {"type": "identify", "userId": "m7", "traits": {"phone": "13800139001"}})
    merge = db.session.scalar(sa.select(Merge))
    assert {line.profile_id for line in lines()} == {merge.survivor_id}
    unmerge(SYSTEM, merge.merged_id)
    assert {line.event_id: line.profile_id for line in lines()} == owners
    events = dict(db.session.execute(sa.select(Event.id, Event.profile_id)).all())
    assert all(events[event_id] == pid for event_id, pid in owners.items())


def test_erasure_deletes_the_persons_lines(source):
    send(source, purchase("u1"), purchase("u2"))
    target = db.session.scalar(sa.select(Profile.id).order_by(Profile.id))
    request = erasure.request_erasure(SYSTEM, target, "data subject request")
    assert erasure.run_erasure(request.id) == "completed"
    assert lines() and all(line.profile_id != target for line in lines())


def test_the_backfill_projects_events_stored_before_the_projection(source):
    send(source, purchase("u1"), purchase("u2", items="none"))
    expected = [(r.event_id, r.line, r.drug_code, r.runs_out) for r in lines()]
    db.session.execute(sa.delete(PurchaseLine))
    assert backfill(db.session.connection()) == len(expected)
    db.session.commit()
    assert [(r.event_id, r.line, r.drug_code, r.runs_out) for r in lines()] == expected
    assert lines_of(1, None, "pos_purchase", T0, None)[0]["line"] == 0  # properties of any shape


REFILL = {"type": "refill_lapse", "drug_codes": ["D001"], "grace_days": 10}
OTC = {"type": "event_count", "event": "pos_purchase", "op": "gte", "value": 1,
       "where": [{"property": "items", "any": [{"property": "rx", "op": "equals", "value": False},
                                                {"property": "qty", "op": "gte", "value": 1}]}]}  # fmt: skip
SPEND = {"type": "event_sum", "event": ["pos_purchase", "order_completed"],
         "property": "total_cny", "op": "gte", "value": 200}  # fmt: skip


@pytest.mark.parametrize("zone", ["Asia/Shanghai", "America/New_York", "Pacific/Kiritimati"])
def test_purchase_rules_read_lines_and_agree_with_the_reference_in_any_time_zone(source, zone):
    send(
        source,
        purchase("u1"),
        purchase("u2", items=[{"drug_code": "D001", "days_of_supply": 29.5}]),
    )
    # The run-out date is a local date: near midnight the time zone decides it.
    for days in (68, 69, 70, 71):
        ctx = Context(now=T0 + timedelta(days=days, hours=13), timezone=zone)
        for rule in (REFILL, OTC, SPEND, {"not": REFILL}):
            sql = set(db.session.scalars(compile_query({"rule": rule}, ctx)))
            assert sql == reference_members({"rule": rule}, ctx), (rule, days)
            assert "FROM purchase_lines" in str(compile_query({"rule": rule}, ctx))


def test_health_data_consent_still_gates_rules_read_from_lines(source):
    send(source, purchase("u1"), purchase("u2"))
    first = db.session.scalar(sa.select(Profile.id).order_by(Profile.id))
    assert service.preview(SYSTEM, {"rule": OTC})["count"] == 0
    record_consent(SYSTEM, first, "health_data", "*", "granted")
    db.session.commit()
    assert service.preview(SYSTEM, {"rule": OTC})["count"] == 1
