"""Ingestion under load and failure: racing first sightings, busy locks, lost races, fast checks."""

from __future__ import annotations

import base64
import socket
import sqlite3
import threading
import time

import jsonschema
import orjson
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdp.actors import SYSTEM
from cdp.config import base_config, finalize
from cdp.db import db
from cdp.exceptions import Unavailable
from cdp.identity.resolver import Resolver
from cdp.ingest import pipeline
from cdp.ingest import tasks as ingest_tasks
from cdp.ingest.messages import Rejected, message_validator, plainly_valid, validate_shape
from cdp.models import Event, Identity, OutboxBatch, Profile, Source
from cdp.sources import create_source
from tests.conftest import count, make_app, migrate

PEOPLE, THREADS, PER_BATCH = 40, 8, 20


# --- the fast shape check -----------------------------------------------------------------


def _schema_verdict(message) -> tuple[str, str] | None:
    """What validate_shape said before the fast path: jsonschema's best match, or None."""
    error = jsonschema.exceptions.best_match(message_validator().iter_errors(message))
    if error is None:
        return None
    parts = [str(p) for p in error.absolute_path]
    if error.validator == "required":
        parts.append(error.message.split("'")[1] if "'" in error.message else "")
    return (".".join(p for p in parts if p) or "(message)", error.message)


def _verdict(message) -> tuple[str, str] | None:
    try:
        validate_shape(message)
    except Rejected as bad:
        return (bad.field, bad.reason)
    return None


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=3),
    st.sampled_from(["", "x" * 33, "x" * 65, "x" * 101, "x" * 201, "patient", "hcp", "track"]),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)
_external_id = st.dictionaries(
    st.sampled_from(["type", "id", "collection", "encoding", "other"]), _values, max_size=5
)
_context = st.dictionaries(
    st.sampled_from(["traits", "externalIds", "profileKind", "device", "library"]),
    st.one_of(_values, st.lists(_external_id, max_size=3), st.lists(_external_id, min_size=51)),
    max_size=4,
)
_message_keys = [
    "type",
    "messageId",
    "userId",
    "anonymousId",
    "previousId",
    "groupId",
    "event",
    "name",
    "category",
    "properties",
    "traits",
    "integrations",
    "timestamp",
    "originalTimestamp",
    "sentAt",
    "receivedAt",
    "unknown",
]
_messages = st.builds(
    lambda fields, type_, context: {
        **fields,
        **({"type": type_} if type_ is not None else {}),
        **({"context": context} if context is not None else {}),
    },
    st.dictionaries(st.sampled_from(_message_keys), _values, max_size=8),
    st.one_of(st.none(), st.sampled_from(["track", "identify", "alias", "group", "page", "x"])),
    st.one_of(st.none(), _context, _values),
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_messages)
def test_the_fast_check_never_accepts_what_the_schema_rejects(message):
    if plainly_valid(message):
        assert _schema_verdict(message) is None
    verdict = _verdict(message)
    if verdict is None or verdict[1] != "event is larger than 32 KB":
        assert verdict == _schema_verdict(message)


@pytest.mark.parametrize(
    "message",
    [
        {"type": "track", "userId": "u", "event": "e"},
        {"type": "track", "userId": True, "event": "e"},
        {"type": "track", "userId": 1.0, "event": "e"},  # jsonschema: 1.0 is an integer
        {"type": "track", "userId": 1.5, "event": "e"},
        {"type": "track", "userId": "u", "event": ""},
        {"type": "track", "userId": "u"},
        {"type": ["track"], "userId": "u", "event": "e"},
        {"type": "alias", "userId": "u"},
        {"type": "group", "userId": "u", "groupId": None},
        {"type": "page", "anonymousId": "a", "name": None, "messageId": "m" * 101},
        {"type": "identify", "userId": "u", "context": {"profileKind": "vet"}},
        {"type": "identify", "userId": "u", "context": {"externalIds": [{"type": "x"}]}},
        {"type": "identify", "userId": "u", "context": {"externalIds": ({"type": "x", "id": 1},)}},
        {"type": "identify", "userId": "u", "context": {"device": []}},
        {"type": "track", "userId": "u", "event": "e", "timestamp": 5},
    ],
)
def test_validate_shape_words_each_rejection_as_jsonschema_does(message):
    assert _verdict(message) == _schema_verdict(message)


# --- racing first sightings -----------------------------------------------------------------


def _batches(thread: int) -> list[list[dict]]:
    """Overlapping windows of people, each as a user id plus a phone, new to the database."""
    batches = []
    for start in range(0, PEOPLE, PER_BATCH // 2):
        people = [(start + thread + i) % PEOPLE for i in range(PER_BATCH)]
        batches.append(
            [
                {
                    "type": "identify",
                    "userId": f"member-{p}",
                    "traits": {"phone": f"1390000{p:04d}", "tier": thread},
                    "messageId": f"t{thread}-s{start}-p{p}",
                }
                for p in people
            ]
        )
    return batches


def _race(app, send) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(THREADS)

    def run(thread: int) -> None:
        try:
            with app.app_context():
                barrier.wait()
                for batch in _batches(thread):
                    send(batch)
                db.session.remove()
        except BaseException as exc:  # surfaced by the caller
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(n,)) for n in range(THREADS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    return errors


def _assert_one_profile_per_person(app) -> None:
    with app.app_context():
        live = db.session.scalars(
            sa.select(Profile.id).where(Profile.merged_into_id.is_(None))
        ).all()
        assert len(live) == PEOPLE
        rows = db.session.execute(sa.select(Identity.type, Identity.profile_id)).all()
        assert sorted(t for t, _ in rows) == ["phone"] * PEOPLE + ["user_id"] * PEOPLE
        owners: dict[str, set[int]] = {}
        for type_, profile_id in rows:
            owners.setdefault(type_, set()).add(profile_id)
        assert owners["phone"] == owners["user_id"] == set(live)  # one person, one profile
        expected = THREADS * len(_batches(0)) * PER_BATCH
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Event)) == expected
        assert None not in set(db.session.scalars(sa.select(Event.profile_id)))


@pytest.fixture
def file_app(migrated_sqlite, tmp_path):
    """An app on its own SQLite file (threads each get a connection of their own)."""
    import shutil

    path = tmp_path / "race.db"
    shutil.copy(migrated_sqlite, path)
    application = make_app(f"sqlite:///{path}")
    yield application
    with application.app_context():
        db.session.remove()
        db.engine.dispose()


def _api_sender(app, write_key: str):
    token = base64.b64encode(f"{write_key}:".encode()).decode()
    headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}
    statuses: list[int] = []

    def send(batch: list[dict]) -> None:
        response = app.test_client().post(
            "/v1/batch", data=orjson.dumps({"batch": batch}), headers=headers
        )
        statuses.append(response.status_code)

    return send, statuses


def _counting_attempts(monkeypatch) -> list[int]:
    attempts: list[int] = []
    store = pipeline._store

    def counted(*args):
        attempts.append(1)
        return store(*args)

    monkeypatch.setattr(pipeline, "_store", counted)
    return attempts


def test_racing_batches_of_new_people_on_sqlite_make_one_profile_each_and_no_5xx(
    file_app, monkeypatch
):
    with file_app.app_context():
        _, key = create_source(SYSTEM, "race", "http")
    send, statuses = _api_sender(file_app, key)
    attempts = _counting_attempts(monkeypatch)
    assert _race(file_app, send) == []
    assert statuses and set(statuses) == {200}
    _assert_one_profile_per_person(file_app)
    # The write lock is taken before anything is read: no batch ever had to be redone.
    assert len(attempts) == len(statuses)


@pytest.fixture
def pg_app(postgres_url):
    application = make_app(postgres_url, SOURCE_RATE_LIMIT="100000 per second")
    migrate(application)
    yield application
    with application.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.mark.services
def test_racing_batches_of_new_people_on_postgresql_make_one_profile_each_and_no_5xx(
    pg_app, monkeypatch
):
    with pg_app.app_context():
        _, key = create_source(SYSTEM, "race", "http")
    send, statuses = _api_sender(pg_app, key)
    attempts = _counting_attempts(monkeypatch)
    assert _race(pg_app, send) == []
    assert statuses and set(statuses) == {200}
    _assert_one_profile_per_person(pg_app)
    # New identifiers are locked before they are created: a later batch waits, not redoes.
    assert len(attempts) == len(statuses)


@pytest.mark.services
def test_on_postgresql_a_batch_that_still_loses_a_race_is_resolved_again(pg_app, monkeypatch):
    # A writer that takes no lock stores the identifier right after our last read of it:
    # the unique index fails our batch, which is then resolved again and finds that person.
    monkeypatch.setattr("cdp.identity.resolver.lock_names", lambda *args: None)
    find_owners, reads = Resolver._find_owners, []

    def racing_find_owners(self, keys):
        find_owners(self, keys)
        reads.append(1)
        if len(reads) == 2:  # our re-read of the new identifiers, first attempt
            with pg_app.app_context():  # another session, committed at once
                other = db.session.get(Source, source_id)
                pipeline.ingest(other, [{"type": "identify", "userId": "u1", "messageId": "o"}])

    with pg_app.app_context():
        source = create_source(SYSTEM, "s", "http")[0]
        source_id = source.id
        monkeypatch.setattr(Resolver, "_find_owners", racing_find_owners)
        attempts = _counting_attempts(monkeypatch)
        result = pipeline.ingest(source, [{"type": "track", "userId": "u1", "event": "e"}])
        assert result.accepted == 1
        assert len(attempts) == 3  # ours twice, around the other writer's one
        assert count(pg_app, Profile) == 1
        owners = set(db.session.scalars(sa.select(Event.profile_id)))
        assert owners == {db.session.scalar(sa.select(Profile.id))}


def test_an_owner_merged_away_after_it_was_read_hands_the_event_to_its_survivor(app_ctx):
    # What a batch sees on PostgreSQL when a merge commits between its read of an
    # identifier's owner and its lock on that profile: the owner is now merged away.
    source = create_source(SYSTEM, "s", "http")[0]
    pipeline.ingest(source, [{"type": "identify", "userId": "u1"}])
    pipeline.ingest(source, [{"type": "identify", "userId": "u2"}])
    first, second = db.session.scalars(sa.select(Profile).order_by(Profile.id)).all()
    first.merged_into_id = second.id
    db.session.commit()
    pipeline.ingest(source, [{"type": "track", "userId": "u1", "anonymousId": "a", "event": "e"}])
    event = db.session.scalar(sa.select(Event).where(Event.name == "e"))
    assert event.profile_id == second.id
    anonymous = db.session.scalar(sa.select(Identity).where(Identity.type == "anonymous_id"))
    assert anonymous.profile_id == second.id


# --- lost races, busy locks, unreachable servers -----------------------------------------------


def test_a_race_lost_on_every_attempt_is_unavailable_and_stores_nothing(app_ctx, monkeypatch):
    source = create_source(SYSTEM, "s", "http")[0]
    pipeline.ingest(source, [{"type": "identify", "userId": "u1"}])
    attempts = []

    def forgetful_preload(self, identifiers):
        # As if another transaction stored u1 after every read: the insert always collides.
        attempts.append(1)

    monkeypatch.setattr(Resolver, "preload", forgetful_preload)
    with pytest.raises(Unavailable):
        pipeline.ingest(source, [{"type": "track", "userId": "u1", "event": "e"}])
    assert len(attempts) == pipeline._ATTEMPTS
    assert count(app_ctx, Event) == 1 and count(app_ctx, Profile) == 1


def test_a_lost_race_answers_503_with_retry_after(app, client, monkeypatch):
    with app.app_context():
        source, key = create_source(SYSTEM, "s", "http")
        pipeline.ingest(source, [{"type": "identify", "userId": "u1"}])
    monkeypatch.setattr(Resolver, "preload", lambda self, identifiers: None)
    token = base64.b64encode(f"{key}:".encode()).decode()
    response = client.post(
        "/v1/track",
        data=orjson.dumps({"userId": "u1", "event": "e"}),
        headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
    )
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "2"


def test_other_constraint_failures_are_bugs_not_races(app_ctx, monkeypatch):
    source = create_source(SYSTEM, "s", "http")[0]
    attempts = []

    def broken(*args):
        attempts.append(1)
        raise sa.exc.IntegrityError("INSERT", {}, sqlite3.IntegrityError("NOT NULL failed"))

    monkeypatch.setattr(pipeline, "_store", broken)
    with pytest.raises(sa.exc.IntegrityError):
        pipeline.ingest(source, [{"type": "track", "userId": "u", "event": "e"}])
    assert len(attempts) == 1


def test_a_batch_queues_for_the_sqlite_write_lock_then_gives_up_with_unavailable(
    file_app, monkeypatch
):
    monkeypatch.setattr(pipeline, "SQLITE_LOCK_WAIT_MS", 300)
    path = file_app.config["SQLALCHEMY_DATABASE_URI"].removeprefix("sqlite:///")
    with file_app.app_context():
        source = create_source(SYSTEM, "s", "http")[0]
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")  # another writer holds the lock...
        threading.Timer(0.1, other.rollback).start()  # ...for a moment: that is queueing
        result = pipeline.ingest(source, [{"type": "track", "userId": "u", "event": "a"}])
        assert result.accepted == 1
        other.execute("BEGIN IMMEDIATE")  # now for longer than a batch waits
        started = time.monotonic()
        with pytest.raises(Unavailable):
            pipeline.ingest(source, [{"type": "track", "userId": "u", "event": "b"}])
        assert 0.25 < time.monotonic() - started < 5
        other.rollback()
        other.close()
        assert count(file_app, Event) == 1
        # The connection went back to its usual busy timeout for everything else.
        connection = db.session.connection()
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000


def test_postgresql_connections_time_out_after_two_seconds():
    config = {**base_config(), "SQLALCHEMY_DATABASE_URI": "postgresql+psycopg://h/db"}
    finalize(config)
    assert config["SQLALCHEMY_ENGINE_OPTIONS"]["connect_args"] == {"connect_timeout": 2}
    sqlite_config = {**base_config(), "SQLALCHEMY_DATABASE_URI": "sqlite:///x.db"}
    finalize(sqlite_config)
    assert "connect_timeout" not in sqlite_config["SQLALCHEMY_ENGINE_OPTIONS"]["connect_args"]


def test_a_postgresql_server_that_never_answers_is_503_within_about_two_seconds():
    # The port accepts TCP connections (the kernel's backlog) but nothing ever answers, like
    # a hung server or a half-open network path: without connect_timeout this waits for ever.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        app = make_app(f"postgresql+psycopg://cdp@127.0.0.1:{port}/cdp")
        token = base64.b64encode(b"wk_" + b"a" * 43 + b":").decode()
        started = time.monotonic()
        response = app.test_client().post(
            "/v1/track",
            data=orjson.dumps({"userId": "u", "event": "e"}),
            headers={"Authorization": f"Basic {token}"},
        )
        elapsed = time.monotonic() - started
        with app.app_context():
            db.engine.dispose()
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "2"
    assert 1.5 < elapsed < 3.5


# --- the outbox drain ------------------------------------------------------------------------


def _drain_concurrently(app, batches: int) -> list[list[int]]:
    seen: list[list[int]] = []
    lock = threading.Lock()

    def record(event_ids, profile_ids):
        with lock:
            seen.append(list(event_ids))

    with app.app_context():
        source = create_source(SYSTEM, "s", "http")[0]
        for n in range(batches):
            pipeline.ingest(source, [{"type": "track", "userId": f"u{n}", "event": "e"}])
        db.session.remove()
    ingest_tasks.register_event_processor("test-recorder", record)
    errors = []

    def drain():
        try:
            with app.app_context():
                ingest_tasks.process_pending()
                db.session.remove()
        except BaseException as exc:
            errors.append(exc)

    try:
        workers = [threading.Thread(target=drain) for _ in range(3)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
    finally:
        ingest_tasks.EVENT_PROCESSORS.pop("test-recorder")
    assert errors == []
    with app.app_context():
        pending = db.session.scalar(
            sa.select(sa.func.count())
            .select_from(OutboxBatch)
            .where(OutboxBatch.processed_at.is_(None))
        )
        assert pending == 0
        assert set(db.session.scalars(sa.select(OutboxBatch.attempts))) == {1}
    return seen


def test_concurrent_drain_jobs_process_each_batch_once_on_sqlite(file_app):
    seen = _drain_concurrently(file_app, 30)
    events = [event_id for ids in seen for event_id in ids]  # claimed chunks come together
    assert len(events) == 30 and len(set(events)) == 30


@pytest.mark.services
def test_concurrent_drain_jobs_process_each_batch_once_on_postgresql(pg_app):
    seen = _drain_concurrently(pg_app, 30)
    events = [event_id for ids in seen for event_id in ids]  # claimed chunks come together
    assert len(events) == 30 and len(set(events)) == 30
