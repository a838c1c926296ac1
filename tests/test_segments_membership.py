"""Segment membership: set-based refresh with history, events, real time, health consent."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from cdp.actors import SYSTEM
from cdp.consent import record_consent
from cdp.db import db, utcnow
from cdp.ingest.pipeline import ingest
from cdp.ingest.tasks import EVENT_PROCESSORS, process_batch
from cdp.models import Event, OutboxBatch, Profile, Source
from cdp.queue import PERIODIC_JOBS
from cdp.sources import create_source, get_source
from segments import membership, realtime, service, tasks
from segments.membership import INTERNAL_SOURCE_ID
from segments.models import Segment, SegmentMembership

SHANGHAI = {"type": "trait", "trait": "city", "op": "equals", "value": "上海"}
READER = {
    "type": "event_count",
    "event": "article_read",
    "within": {"last_days": 30},
    "op": "gte",
    "value": 2,
}
BUYER = {"type": "event_count", "event": "pos_purchase", "op": "gte", "value": 1}


def ago(**delta) -> str:
    return (utcnow() - timedelta(**delta)).isoformat()


@pytest.fixture
def source_id(app_ctx):
    source, _ = create_source(SYSTEM, "CRM", "http")
    return source.id


def send(source_id: str, *messages: dict):
    """Ingest like the API does, then run the downstream processors like the worker does."""
    result = ingest(get_source(source_id), list(messages))
    if result.outbox_id:
        process_batch(result.outbox_id)
    return result


def person(user: str, city: str | None = None, reads: int = 0, days_ago: int = 1) -> list[dict]:
    messages = [{"type": "identify", "userId": user, "traits": {"city": city} if city else {}}]
    messages += [
        {"type": "track", "userId": user, "event": "article_read", "timestamp": ago(days=days_ago)}
        for _ in range(reads)
    ]
    return messages


def pid(user: str) -> int:
    from cdp.models import Identity

    return db.session.scalar(
        sa.select(Identity.profile_id).where(
            Identity.type == "user_id", Identity.value_index == user
        )
    )


def make(name: str, rule: dict, **kw) -> Segment:
    return service.create_segment(SYSTEM, name, {"rule": rule}, **kw)


def refresh(segment: Segment):
    job = tasks.create_refresh_job(SYSTEM, [segment.id])
    results = tasks.run_refresh(job.id, [segment.id])
    db.session.refresh(segment)
    return results[0]


def open_members(segment_id: int) -> set[int]:
    return set(
        db.session.scalars(
            sa.select(SegmentMembership.profile_id).where(
                SegmentMembership.segment_id == segment_id, SegmentMembership.exited_at.is_(None)
            )
        )
    )


def segment_events(name: str | None = None) -> list[Event]:
    query = sa.select(Event).where(Event.source_id == INTERNAL_SOURCE_ID).order_by(Event.id)
    if name:
        query = query.where(Event.name == name)
    return list(db.session.scalars(query))


def test_refresh_records_members_then_only_the_delta_with_events(app_ctx, source_id):
    send(source_id, *person("a", "上海", reads=3), *person("b", "上海", reads=1))
    send(source_id, *person("c", "北京", reads=5))
    segment = make("上海读者", {"and": [SHANGHAI, READER]}, realtime=False)
    first = refresh(segment)
    assert (first.size, first.entered, first.exited) == (1, 1, 0)
    assert open_members(segment.id) == {pid("a")}
    assert segment_events() == []  # the first computation records members without events

    # b reads more (enters), a moves to 北京 (leaves): the refresh writes just that.
    send(source_id, *person("b", "上海", reads=2), *person("a", "北京"))
    second = refresh(segment)
    assert (second.size, second.entered, second.exited) == (1, 1, 1)
    assert open_members(segment.id) == {pid("b")}
    stints = db.session.scalars(
        sa.select(SegmentMembership).where(SegmentMembership.profile_id == pid("a"))
    ).all()
    assert len(stints) == 1 and stints[0].exited_at is not None
    entered, exited = segment_events("segment_entered"), segment_events("segment_exited")
    assert [e.profile_id for e in entered] == [pid("b")]
    assert [e.profile_id for e in exited] == [pid("a")]
    assert entered[0].properties == {
        "segment_id": segment.id,
        "segment_name": "上海读者",
        "version": 1,
    }
    assert db.session.get(Source, INTERNAL_SOURCE_ID).kind == "internal"
    # Handed downstream like ingested events: one outbox batch for journeys to read.
    batch = db.session.scalar(
        sa.select(OutboxBatch).where(OutboxBatch.source_id == INTERNAL_SOURCE_ID)
    )
    assert sorted(batch.event_ids) == sorted(e.id for e in entered + exited)

    # Nothing changed: nothing written.
    third = refresh(segment)
    assert (third.entered, third.exited) == (0, 0)
    assert len(segment_events()) == 2
    assert segment.last_refresh["reason"] == "refresh"


def test_size_history_and_size_on_a_past_instant(app_ctx, source_id):
    send(source_id, *person("a", "上海"), *person("b", "上海"))
    segment = make("上海", SHANGHAI)
    refresh(segment)
    sid = segment.id
    # Rewrite history: a joined 10 days ago and left 3 days ago; b joined 5 days ago.
    now = utcnow()
    rows = {m.profile_id: m for m in db.session.scalars(sa.select(SegmentMembership))}
    rows[pid("a")].entered_at = now - timedelta(days=10)
    rows[pid("a")].exited_at = now - timedelta(days=3)
    rows[pid("b")].entered_at = now - timedelta(days=5)
    db.session.commit()
    assert membership.size_at(sid, now - timedelta(days=7)) == 1
    assert membership.size_at(sid, now - timedelta(days=4)) == 2
    assert membership.size_at(sid, now - timedelta(days=1)) == 1
    assert membership.size_at(sid, now - timedelta(days=20)) == 0
    history = membership.size_history(sid, days=14)
    assert len(history) == 14 and history[-1]["size"] == 1
    assert max(day["size"] for day in history) == 2
    assert sum(day["entered"] for day in history) == 2
    assert sum(day["exited"] for day in history) == 1
    sizes = [day["size"] for day in history]
    assert sizes[0] == 0 and 2 in sizes


def test_realtime_rechecks_only_dependent_segments_for_the_batch(app_ctx, source_id):
    send(source_id, *person("a", "上海", reads=1), *person("b", "北京"))
    readers = make("读者", READER)
    shanghai = make("上海", SHANGHAI)
    buyers = make("买过药", BUYER)
    for segment in (readers, shanghai, buyers):
        refresh(segment)
    assert open_members(readers.id) == set()
    assert "segments" in EVENT_PROCESSORS

    # A read by a: only segments depending on article_read (and not the 上海 one) are checked.
    result = ingest(get_source(source_id), person("a", reads=1)[1:])
    outbox = db.session.get(OutboxBatch, result.outbox_id)
    report = realtime.process_events(list(outbox.event_ids), list(outbox.profile_ids))
    assert report == {"segments": 1, "entered": 1, "exited": 0}
    process_batch(result.outbox_id)  # idempotent: nothing left to do
    assert open_members(readers.id) == {pid("a")}
    assert [e.profile_id for e in segment_events("segment_entered")] == [pid("a")]
    db.session.refresh(readers)
    assert readers.size == 1

    # A trait change is a profile change: the 上海 segment follows it at once.
    send(source_id, *person("b", "上海"))
    assert open_members(shanghai.id) == {pid("a"), pid("b")}
    send(source_id, *person("a", "杭州"))
    assert open_members(shanghai.id) == {pid("b")}
    assert [e.profile_id for e in segment_events("segment_exited")] == [pid("a")]

    # A brand-new profile is checked against every segment.
    send(source_id, *person("new", "上海"))
    assert pid("new") in open_members(shanghai.id)

    # Events timed just now (no timestamp: the time they arrived) count at once.
    send(source_id, *[{"type": "track", "userId": "new", "event": "article_read"}] * 2)
    assert pid("new") in open_members(readers.id)


def test_realtime_skips_segments_never_computed_and_non_realtime_ones(app_ctx, source_id):
    send(source_id, *person("a", "上海"))
    make("没算过", SHANGHAI)
    manual = make("手动", SHANGHAI, realtime=False)
    refresh(manual)
    send(source_id, *person("b", "上海"))
    assert open_members(manual.id) == {pid("a")}


def test_health_data_rules_count_only_profiles_with_health_consent(app_ctx, source_id):
    purchase = {
        "event": "pos_purchase",
        "properties": {"items": [{"drug_code": "D001", "rx": True, "days_of_supply": 30}]},
    }
    for user in ("a", "b"):
        send(source_id, {"type": "track", "userId": user, "timestamp": ago(days=2), **purchase})
    segment = make("买过处方药", BUYER)
    assert segment.health_data is True
    assert "consent" in segment.depends_on
    refresh(segment)
    assert open_members(segment.id) == set()
    record_consent(SYSTEM, pid("a"), "health_data", "*", "granted")
    db.session.commit()
    assert refresh(segment).size == 1
    assert open_members(segment.id) == {pid("a")}
    # Withdrawing takes the profile out again.
    record_consent(SYSTEM, pid("a"), "health_data", "*", "withdrawn")
    db.session.commit()
    assert refresh(segment).size == 0
    # A rule on non-medical events is not health data.
    assert make("读者", READER).health_data is False


def test_members_of_merged_profiles_leave_on_refresh(app_ctx, source_id):
    send(source_id, *person("a", "上海"), *person("b", "上海"))
    segment = make("上海", SHANGHAI, realtime=False)
    refresh(segment)
    assert len(open_members(segment.id)) == 2
    loser = db.session.get(Profile, pid("b"))
    loser.merged_into_id = pid("a")
    db.session.commit()
    result = refresh(segment)
    assert result.exited == 1 and open_members(segment.id) == {pid("a")}


def test_archive_closes_memberships_and_is_refused_while_referenced(app_ctx, source_id):
    from cdp.exceptions import Conflict

    send(source_id, *person("a", "上海"))
    base = make("上海", SHANGHAI)
    user = make("上海且读者", {"and": [{"type": "segment", "segment_id": base.id}, READER]})
    assert base.id in user.references
    refresh(base)
    with pytest.raises(Conflict):
        service.archive_segment(SYSTEM, base.id)
    service.archive_segment(SYSTEM, user.id)
    service.archive_segment(SYSTEM, base.id)
    assert open_members(base.id) == set()
    assert db.session.get(Segment, base.id).status == "archived"


def test_overlap_counts_current_members(app_ctx, source_id):
    send(
        source_id,
        *person("a", "上海", reads=3),
        *person("b", "上海"),
        *person("c", "北京", reads=2),
    )
    one, two = make("上海", SHANGHAI), make("读者", READER)
    refresh(one)
    refresh(two)
    assert membership.overlap(one.id, two.id) == {
        "a": 2,
        "b": 2,
        "both": 1,
        "only_a": 1,
        "only_b": 1,
    }


def test_scheduled_refresh_is_registered_and_refreshes_what_is_due(app_ctx, source_id):
    assert PERIODIC_JOBS["segments-refresh"].func == "segments.tasks.refresh_due"
    send(source_id, *person("a", "上海", reads=2))
    segment = make("读者", READER)  # time-based: hourly
    static = make("上海", SHANGHAI)  # daily
    assert set(tasks.due_segments()) == {segment.id, static.id}
    assert tasks.refresh_due() == 2
    assert tasks.due_segments() == []
    assert tasks.due_segments(utcnow() + timedelta(minutes=61)) == [segment.id]
    assert set(tasks.due_segments(utcnow() + timedelta(days=1, minutes=1))) == {
        segment.id,
        static.id,
    }
    job = tasks.recent_refresh_jobs(segment.id)[0]
    assert (job.status, job.progress, job.total) == ("succeeded", 2, 2)
    assert job.params["scheduled"] is True


def test_a_changed_definition_bumps_the_version_and_dependents_follow(app_ctx, source_id):
    base = make("上海", SHANGHAI)
    user = make("上海读者", {"and": [{"type": "segment", "segment_id": base.id}]})
    assert user.health_data is False
    service.update_segment(SYSTEM, base.id, definition={"rule": {"and": [SHANGHAI, BUYER]}})
    db.session.refresh(user)
    assert db.session.get(Segment, base.id).version == 2
    assert user.health_data is True
    assert "event:pos_purchase" in user.depends_on


@pytest.mark.services
def test_refresh_real_time_and_history_on_postgresql(postgres_url):
    from tests.conftest import make_app, migrate

    app = make_app(postgres_url)
    migrate(app)
    with app.app_context():
        source, _ = create_source(SYSTEM, "CRM", "http")
        send(source.id, *person("a", "上海", reads=3), *person("b", "上海", reads=1))
        segment = make("上海读者", {"and": [SHANGHAI, READER]})
        assert refresh(segment).size == 1
        send(source.id, *person("b", reads=1))  # real time: b enters
        assert open_members(segment.id) == {pid("a"), pid("b")}
        send(source.id, *person("a", "北京"))  # a leaves
        assert open_members(segment.id) == {pid("b")}
        assert [e.name for e in segment_events()] == ["segment_entered", "segment_exited"]
        assert membership.size_history(segment.id, days=3)[-1]["size"] == 1
        buyers = make("买过药", BUYER)
        assert refresh(buyers).size == 0  # no health-data consent
        assert service.preview(SYSTEM, {"rule": SHANGHAI})["count"] == 1
        db.session.remove()
        db.engine.dispose()
