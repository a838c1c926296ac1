"""The ingestion pipeline: validation, dedupe, identity resolution, merges and traits."""

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from cdp.actors import SYSTEM
from cdp.db import db
from cdp.exceptions import Conflict
from cdp.identity.merges import unmerge
from cdp.ingest.pipeline import ingest
from cdp.models import Event, Identity, IdentityConflict, Merge, OutboxBatch, Profile, Violation
from cdp.profiles import (
    decrypt_profile_pii,
    find_by_identifier,
    identifiers_of,
    search_profiles,
)
from cdp.sources import create_source

T0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)


@pytest.fixture
def source(app_ctx):
    src, _ = create_source(SYSTEM, "App", "http")
    return src


def at(minutes: int) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


def live_profiles():
    return db.session.scalars(sa.select(Profile).where(Profile.merged_into_id.is_(None))).all()


def test_identify_then_track_resolve_to_one_profile(source):
    ingest(
        source,
        [{"type": "identify", "userId": "u1", "traits": {"plan": "gold"}, "timestamp": at(0)}],
    )
    ingest(
        source, [{"type": "track", "userId": "u1", "event": "Order Completed", "timestamp": at(1)}]
    )
    profiles = live_profiles()
    assert len(profiles) == 1
    assert profiles[0].traits == {"plan": "gold"}
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Event)) == 2


def test_retried_message_is_acked_but_stored_once(source):
    msg = {"type": "track", "userId": "u1", "event": "Viewed", "messageId": "m-1"}
    first = ingest(source, [msg, dict(msg)])
    second = ingest(source, [msg])
    assert (first.accepted, first.duplicates) == (1, 1)
    assert (second.accepted, second.duplicates) == (0, 1)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Event)) == 1


def test_partial_batch_keeps_valid_events_and_reports_each_rejection(source):
    result = ingest(
        source,
        [
            {"type": "track", "userId": "u1", "event": "Ok"},
            {"type": "track", "userId": "u1"},
            {"type": "teleport", "userId": "u1"},
            {"type": "track", "event": "No id"},
            {"type": "track", "userId": "u1", "event": "Bad time", "timestamp": "yesterday"},
            "not an object",
        ],
    )
    assert result.accepted == 1
    assert [(r["index"], r["field"]) for r in result.rejected] == [
        (1, "event"),
        (2, "type"),
        (3, "userId"),
        (4, "timestamp"),
        (5, "(message)"),
    ]
    stored = db.session.scalars(sa.select(Violation).order_by(Violation.batch_index)).all()
    assert [v.batch_index for v in stored] == [1, 2, 3, 4, 5]
    assert all(v.rejected for v in stored)


def test_oversized_event_is_rejected(source):
    result = ingest(
        source, [{"type": "track", "userId": "u", "event": "Big", "properties": {"x": "y" * 40000}}]
    )
    assert result.accepted == 0
    assert result.rejected[0]["reason"] == "event is larger than 32 KB"


def test_clock_skew_is_corrected_from_sent_at(source):
    received = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    # The device clock is 1 hour fast: it says sent at 13:00 for an event recorded at 12:59.
    msg = {
        "type": "track",
        "userId": "u",
        "event": "Tap",
        "timestamp": "2026-11-01T12:59:00+00:00",
        "sentAt": "2026-11-01T13:00:00+00:00",
    }
    ingest(source, [msg], received_at=received)
    event = db.session.scalar(sa.select(Event))
    assert event.timestamp == received - timedelta(minutes=1)
    assert event.received_at == received


def test_shared_phone_merges_wechat_and_pos_profiles_and_keeps_pii_encrypted(source):
    ingest(
        source,
        [
            {
                "type": "identify",
                "anonymousId": "a1",
                "traits": {"phone": "138 0013 9001"},
                "timestamp": at(0),
            }
        ],
    )
    ingest(
        source,
        [
            {
                "type": "identify",
                "userId": "member-7",
                "traits": {"name": "李娜", "gender": "female"},
                "timestamp": at(1),
            }
        ],
    )
    assert len(live_profiles()) == 2
    # An event carrying both identifiers links the two people.
    ingest(
        source,
        [
            {
                "type": "identify",
                "userId": "member-7",
                "traits": {"phone": "+86 13800139001"},
                "timestamp": at(2),
            }
        ],
    )
    profiles = live_profiles()
    assert len(profiles) == 1
    merge = db.session.scalar(sa.select(Merge))
    assert merge.survivor_id == profiles[0].id
    assert merge.linked_by == ["phone"]
    pii = decrypt_profile_pii(profiles[0].pii_encrypted)
    assert pii == {"name": "李娜", "phone": "+86 13800139001"}
    assert profiles[0].traits == {"gender": "female"}
    phone_rows = db.session.scalars(sa.select(Identity).where(Identity.type == "phone")).all()
    assert len(phone_rows) == 1 and "13800139001" not in phone_rows[0].value_index


def test_profiles_of_different_kinds_never_merge(source):
    ingest(source, [{"type": "identify", "userId": "doc-1", "context": {"profileKind": "hcp"}}])
    ingest(source, [{"type": "identify", "anonymousId": "anon-9"}])
    ingest(source, [{"type": "track", "event": "x", "userId": "doc-1", "anonymousId": "anon-9"}])
    assert len(live_profiles()) == 2
    conflict = db.session.scalar(sa.select(IdentityConflict))
    assert "different kinds" in conflict.reason


def test_limit_drops_lowest_priority_identifier_instead_of_merging(source):
    unionid = lambda v: {"type": "wechat_unionid", "id": v}  # noqa: E731
    ingest(
        source,
        [{"type": "identify", "anonymousId": "a", "context": {"externalIds": [unionid("U1")]}}],
    )
    ingest(
        source,
        [{"type": "identify", "anonymousId": "b", "context": {"externalIds": [unionid("U2")]}}],
    )
    # One event claims both: the two unionids can't be one person; anonymous_id "b" is dropped.
    ingest(
        source,
        [
            {
                "type": "track",
                "event": "x",
                "anonymousId": "b",
                "context": {"externalIds": [unionid("U1")]},
            }
        ],
    )
    assert len(live_profiles()) == 2
    event = db.session.scalar(sa.select(Event).where(Event.name == "x"))
    owner_u1 = db.session.scalar(sa.select(Identity.profile_id).where(Identity.value_index == "U1"))
    assert event.profile_id == owner_u1
    assert db.session.scalar(sa.select(IdentityConflict)).identifier_type == "anonymous_id"


def test_blocked_values_are_stored_but_link_nobody(source):
    result = ingest(
        source,
        [
            {"type": "track", "event": "a", "userId": "null", "traits": {"phone": "13800138000"}},
            {
                "type": "track",
                "event": "b",
                "userId": "undefined",
                "traits": {"phone": "13800138000"},
            },
        ],
    )
    assert result.accepted == 2 and result.flagged == 2
    assert live_profiles() == []
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Event)) == 2


def test_alias_links_anonymous_history_to_user(source):
    ingest(source, [{"type": "track", "event": "browse", "anonymousId": "anon-1"}])
    ingest(source, [{"type": "alias", "previousId": "anon-1", "userId": "user-1"}])
    ingest(source, [{"type": "track", "event": "buy", "userId": "user-1"}])
    profiles = live_profiles()
    assert len(profiles) == 1
    assert {e.profile_id for e in db.session.scalars(sa.select(Event))} == {profiles[0].id}


def test_traits_merge_by_event_time_latest_wins(source):
    ingest(
        source,
        [{"type": "identify", "userId": "u", "traits": {"city": "上海"}, "timestamp": at(10)}],
    )
    # A late-arriving older event must not overwrite the newer value.
    ingest(
        source,
        [
            {
                "type": "identify",
                "userId": "u",
                "traits": {"city": "北京", "tier": 1},
                "timestamp": at(5),
            }
        ],
    )
    profile = live_profiles()[0]
    assert profile.traits == {"city": "上海", "tier": 1}
    assert profile.first_seen_at == T0 + timedelta(minutes=5)
    assert profile.last_seen_at == T0 + timedelta(minutes=10)


def test_committed_batch_has_an_outbox_row_for_downstream_work(source):
    result = ingest(source, [{"type": "track", "userId": "u", "event": f"e{i}"} for i in range(5)])
    batch = db.session.get(OutboxBatch, result.outbox_id)
    assert len(batch.event_ids) == 5
    assert batch.processed_at is None


def test_tracking_plan_block_mode_rejects_unplanned_and_bad_events(source):
    source.tracking_plan = {
        "mode": "block",
        "events": {"Order Completed": {"type": "object", "required": ["order_id"]}},
    }
    db.session.commit()
    result = ingest(
        source,
        [
            {
                "type": "track",
                "userId": "u",
                "event": "Order Completed",
                "properties": {"order_id": "1"},
            },
            {"type": "track", "userId": "u", "event": "Order Completed", "properties": {}},
            {"type": "track", "userId": "u", "event": "Surprise"},
        ],
    )
    assert result.accepted == 1
    assert [(r["index"], r["field"]) for r in result.rejected] == [(1, "properties"), (2, "event")]


def test_pii_is_not_stored_in_event_rows(source):
    ingest(
        source,
        [
            {
                "type": "identify",
                "userId": "u",
                "traits": {"phone": "13911112222", "name": "王芳"},
                "context": {"ip": "1.2.3.4"},
                "properties": {"email": "w@x.cn"},
            }
        ],
    )
    event = db.session.scalar(sa.select(Event))
    blob = repr((event.properties, event.context))
    for secret in ("13911112222", "王芳", "1.2.3.4", "w@x.cn"):
        assert secret not in blob


def test_unmerge_restores_the_exact_prior_state(source):
    ingest(
        source,
        [
            {
                "type": "identify",
                "anonymousId": "a1",
                "traits": {"phone": "13800139001", "city": "上海"},
                "timestamp": at(0),
            }
        ],
    )
    ingest(
        source,
        [
            {
                "type": "identify",
                "userId": "m7",
                "traits": {"name": "李娜", "city": "杭州"},
                "timestamp": at(1),
            }
        ],
    )
    ingest(source, [{"type": "track", "event": "visit", "userId": "m7", "timestamp": at(2)}])

    def snapshot():
        db.session.expire_all()
        profiles = {
            p.id: (
                p.kind,
                p.traits,
                p.trait_times,
                decrypt_profile_pii(p.pii_encrypted) if p.pii_encrypted else {},
                p.first_seen_at,
                p.last_seen_at,
                p.merged_into_id,
                p.name_index,
            )
            for p in db.session.scalars(sa.select(Profile))
        }
        idents = sorted(db.session.execute(sa.select(Identity.id, Identity.profile_id)).all())
        events = sorted(db.session.execute(sa.select(Event.id, Event.profile_id)).all())
        return profiles, idents, events

    before = snapshot()
    ingest(
        source,
        [
            {
                "type": "identify",
                "userId": "m7",
                "traits": {"phone": "13800139001", "city": "北京"},
                "timestamp": at(3),
            }
        ],
    )
    assert len(live_profiles()) == 1
    merge = db.session.scalar(sa.select(Merge))
    merged_event = db.session.scalar(sa.select(Event).order_by(Event.id.desc()))
    unmerge(SYSTEM, merge.merged_id)
    profiles, idents, events = snapshot()
    # Everything is as before, except the event that caused the merge (it stays with the survivor).
    assert profiles[merge.merged_id] == before[0][merge.merged_id]
    assert profiles[merge.survivor_id] == before[0][merge.survivor_id]
    assert idents == before[1]
    assert [e for e in events if e[0] != merged_event.id] == before[2]
    assert db.session.get(Merge, merge.id).undone_at is not None
    with pytest.raises(Conflict):
        unmerge(SYSTEM, merge.merged_id, merge.id)


def test_lookup_by_phone_and_search_by_name(source):
    ingest(
        source,
        [{"type": "identify", "userId": "u9", "traits": {"phone": "13911112222", "name": "王 芳"}}],
    )
    profile = find_by_identifier("phone", "", "+86 139 1111 2222")
    assert profile is not None
    assert [p.id for p in search_profiles("王芳")] == [profile.id]
    assert [p.id for p in search_profiles("13911112222")] == [profile.id]
    assert [p.id for p in search_profiles("u9")] == [profile.id]
    shown = {i["type"]: i["value"] for i in identifiers_of(profile.id)}
    assert shown == {"user_id": "u9", "phone": "+86139****2222"}
