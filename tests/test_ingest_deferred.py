"""Deferred resolution (the default): the tracking API acks committed batches, the drain job resolves them."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdp.db import db, utcnow
from cdp.identity.blocklist import current_blocklist
from cdp.ingest import inbound, pipeline
from cdp.ingest import tasks as ingest_tasks
from cdp.ingest.messages import Preparer, Rejected
from cdp.ingest.tasks import process_pending, requeue_stale_batches
from cdp.models import Event, InboundBatch, Profile, Violation
from cdp.pii import vault
from cdp.queue import BackgroundLoop, tasks
from tests.conftest import make_app
from tests.test_ingest_robustness import _messages
from tests.test_segment_api import events, new_source, post, track


@pytest.fixture
def deferred_app(migrated_sqlite, tmp_path):
    import shutil

    path = tmp_path / "cdp.db"
    shutil.copy(migrated_sqlite, path)
    application = make_app(f"sqlite:///{path}", INGEST_DEFER_RESOLUTION=True)
    yield application
    with application.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def source(deferred_app):
    return new_source(deferred_app)


def pending(app) -> int:
    with app.app_context():
        return inbound.pending_count()


def drain(app) -> dict:
    with app.app_context():
        return process_pending()


def live_profiles(app) -> list[Profile]:
    with app.app_context():
        rows = db.session.scalars(sa.select(Profile).where(Profile.merged_into_id.is_(None))).all()
        db.session.expunge_all()
        return rows


def test_production_default_is_deferred():
    assert make_app("sqlite://", INGEST_DEFER_RESOLUTION="true").config["INGEST_DEFER_RESOLUTION"]
    assert not make_app("sqlite://", INGEST_DEFER_RESOLUTION="false").config[
        "INGEST_DEFER_RESOLUTION"
    ]


def test_acked_batch_is_committed_then_resolved_by_the_drain_job(deferred_app, source):
    client = deferred_app.test_client()
    batch = [
        track("Viewed", user="u1", messageId="m1"),
        {"type": "identify", "userId": "u1", "traits": {"phone": "13700214455", "tier": 2}},
        {"type": "track", "event": "x"},  # no identifier: rejected now, in the response
    ]
    response = post(client, "/v1/batch", {"batch": batch}, source.write_key)
    assert response.status_code == 200
    body = response.get_json()
    assert body["accepted"] == 2 and [r["index"] for r in body["rejected"]] == [2]
    assert pending(deferred_app) == 1 and events(deferred_app) == []
    with deferred_app.app_context():
        assert db.session.scalar(sa.select(sa.func.count(Violation.id))) == 1
        # the drain job was queued by the ack
        assert [j.func_name for j in tasks().queue("ingest").get_jobs()] == [
            "cdp.ingest.tasks.process_pending"
        ]
    drain(deferred_app)
    assert pending(deferred_app) == 0
    stored = events(deferred_app, source_id=source.id)
    assert [(e.type, e.message_id) for e in stored][0] == ("track", "m1")
    assert len(stored) == 2 and len({e.profile_id for e in stored}) == 1
    (person,) = live_profiles(deferred_app)
    assert person.traits == {"tier": 2}


def test_retries_before_and_after_resolution_are_stored_once(deferred_app, source):
    client = deferred_app.test_client()
    batch = [track(messageId="r1"), track(messageId="r2")]
    for _ in range(2):  # the SDK retried before the drain job ran
        assert post(client, "/v1/batch", {"batch": batch}, source.write_key).status_code == 200
    drain(deferred_app)
    assert sorted(e.message_id for e in events(deferred_app)) == ["r1", "r2"]
    again = post(client, "/v1/batch", {"batch": batch}, source.write_key).get_json()
    assert again["duplicates"] == 2 and again["accepted"] == 0
    assert pending(deferred_app) == 0


def test_messages_without_an_id_are_stored_once_even_if_resolved_twice(deferred_app, source):
    client = deferred_app.test_client()
    post(client, "/v1/track", {"userId": "u1", "event": "x"}, source.write_key)
    with deferred_app.app_context():
        (inbound_id,) = db.session.scalars(sa.select(InboundBatch.id)).all()
        assert inbound.resolve(inbound_id) == 1
        assert inbound.resolve(inbound_id) == 0  # another worker got there first: nothing
    assert len(events(deferred_app)) == 1


def test_a_failed_resolution_keeps_the_batch_until_its_claim_expires(
    deferred_app, source, monkeypatch
):
    client = deferred_app.test_client()
    post(client, "/v1/batch", {"batch": [track(messageId="f1")]}, source.write_key)

    def broken(*args, **kwargs):
        raise RuntimeError("worker died half-way")

    monkeypatch.setattr(pipeline, "_store", broken)
    drain(deferred_app)
    assert pending(deferred_app) == 1 and events(deferred_app) == []
    monkeypatch.undo()
    drain(deferred_app)  # still claimed by the failed attempt: not taken yet
    assert pending(deferred_app) == 1
    with deferred_app.app_context():
        db.session.execute(
            sa.update(InboundBatch).values(claimed_at=utcnow() - ingest_tasks.CLAIM_TTL * 2)
        )
        db.session.commit()
        assert requeue_stale_batches() == 1  # the sweeper queues a drain job for it
    drain(deferred_app)
    assert [e.message_id for e in events(deferred_app)] == ["f1"]


def test_a_batch_nobody_claimed_is_found_by_the_sweeper(deferred_app, source):
    client = deferred_app.test_client()
    post(client, "/v1/batch", {"batch": [track(messageId="s1")]}, source.write_key)
    with deferred_app.app_context():
        assert requeue_stale_batches() == 0  # fresh: its drain job is queued
        db.session.execute(
            sa.update(InboundBatch).values(received_at=utcnow() - timedelta(minutes=10))
        )
        db.session.commit()
        assert requeue_stale_batches() == 1


def test_acked_flags_stay_accepted_when_the_plan_changes_before_resolution(deferred_app, source):
    from cdp.models import Source

    client = deferred_app.test_client()
    with deferred_app.app_context():
        row = db.session.get(Source, source.id)
        row.tracking_plan = {"mode": "flag", "events": {"Known": {"type": "object"}}}
        db.session.commit()
    body = post(client, "/v1/batch", {"batch": [track("Unknown")]}, source.write_key).get_json()
    assert body["accepted"] == 1 and body["flagged"] == 1
    with deferred_app.app_context():
        row = db.session.get(Source, source.id)
        row.tracking_plan = {"mode": "block", "events": {"Known": {"type": "object"}}}
        db.session.commit()
    drain(deferred_app)
    assert [e.name for e in events(deferred_app)] == ["Unknown"]
    with deferred_app.app_context():  # flagged once, at the request, not again
        assert db.session.scalar(sa.select(sa.func.count(Violation.id))) == 1


def test_cdp_drain_resolves_what_is_pending(deferred_app, source):
    client = deferred_app.test_client()
    for n in range(3):
        post(client, "/v1/batch", {"batch": [track(messageId=f"d{n}")]}, source.write_key)
    result = deferred_app.test_cli_runner().invoke(args=["drain"])
    assert result.exit_code == 0, result.output
    assert "Resolved 3 inbound batches (0 left" in result.output
    assert sorted(e.message_id for e in events(deferred_app)) == ["d0", "d1", "d2"]
    with deferred_app.app_context():
        assert db.session.scalar(sa.select(sa.func.count(Event.id))) == 3


def _outcome(examine, message):
    try:
        examine(0, message)
    except Rejected as bad:
        return (bad.field, bad.reason)
    return None


_identifier_fields = st.fixed_dictionaries(
    {},
    optional={
        "userId": st.sampled_from(["", "u1", None]),
        "anonymousId": st.sampled_from(["", "a1", None]),
        "traits": st.fixed_dictionaries(
            {}, optional={"phone": st.sampled_from(["", "12", "13700214455"]), "email": st.just("")}
        ),
        "context": st.fixed_dictionaries(
            {},
            optional={
                "device": st.sampled_from([{}, {"id": ""}, {"id": "d1"}]),
                "externalIds": st.sampled_from(
                    [[], [{"type": "wechat_unionid", "id": "x"}], [{"type": "nope", "id": "y"}]]
                ),
                "traits": st.fixed_dictionaries(
                    {}, optional={"mobile": st.sampled_from(["", "bad", "13700214455"])}
                ),
            },
        ),
    },
)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.one_of(
        _messages,
        st.builds(
            lambda ids, type_: {**ids, "type": type_, "event": "e", "previousId": "p"},
            _identifier_fields,
            st.sampled_from(["track", "identify", "alias"]),
        ),
    )
)
def test_the_ack_time_check_rejects_exactly_what_resolving_would_reject(app_ctx, message):
    preparer = Preparer(vault(), current_blocklist(), utcnow())
    assert _outcome(preparer.check, message) == _outcome(preparer.prepare, message)


def test_batches_stored_together_keep_their_own_received_at(deferred_app, source):
    client = deferred_app.test_client()
    for n in range(3):
        post(client, "/v1/batch", {"batch": [track(messageId=f"g{n}")]}, source.write_key)
    with deferred_app.app_context():
        received = dict(
            db.session.execute(sa.select(InboundBatch.id, InboundBatch.received_at)).all()
        )
        db.session.execute(
            sa.update(InboundBatch)
            .where(InboundBatch.id == min(received))
            .values(received_at=utcnow() - timedelta(hours=1))
        )
        db.session.commit()
        assert inbound.resolve_pending() == 3
        stored = dict(db.session.execute(sa.select(Event.message_id, Event.received_at)).all())
    assert (stored["g1"] - stored["g0"]) > timedelta(minutes=59)
    assert abs(stored["g2"] - stored["g1"]) < timedelta(minutes=1)


def test_one_bad_batch_does_not_hold_back_the_others_stored_with_it(
    deferred_app, source, monkeypatch
):
    client = deferred_app.test_client()
    for n in range(3):
        post(client, "/v1/batch", {"batch": [track(messageId=f"b{n}")]}, source.write_key)
    real = pipeline.prepare

    def fails_on_b1(source, messages, *args, **kwargs):
        if any(m.get("messageId") == "b1" for m in messages):
            raise RuntimeError("a bug tripped by one batch")
        return real(source, messages, *args, **kwargs)

    monkeypatch.setattr(pipeline, "prepare", fails_on_b1)
    with deferred_app.app_context():
        assert inbound.resolve_pending() == 3
        assert inbound.pending_count() == 1  # b1 keeps its claim, retried after CLAIM_TTL
    assert sorted(e.message_id for e in events(deferred_app)) == ["b0", "b2"]


def test_make_run_embedded_worker_resolves_what_the_api_acked(deferred_app, source):
    """`make run` (no Redis): the web process's worker threads run the drain job."""
    loop = BackgroundLoop(deferred_app, deferred_app.extensions["cdp.queue"], poll=0.05)
    loop.start()
    try:
        client = deferred_app.test_client()
        batch = [track(user="emb-1", messageId=f"e{n}") for n in range(3)]
        assert post(client, "/v1/batch", {"batch": batch}, source.write_key).status_code == 200
        deadline = time.monotonic() + 20
        while len(events(deferred_app)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        loop.stop()
    stored = events(deferred_app)
    assert sorted(e.message_id for e in stored) == ["e0", "e1", "e2"]
    assert len({e.profile_id for e in stored}) == 1 and pending(deferred_app) == 0
