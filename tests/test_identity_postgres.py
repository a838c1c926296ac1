"""Identity resolution on PostgreSQL: concurrent first sightings of a person end in one profile."""

import threading

import pytest
import sqlalchemy as sa

from cdp.actors import SYSTEM
from cdp.db import db
from cdp.ingest.pipeline import ingest
from cdp.models import Event, Identity, Profile, Source
from cdp.sources import create_source
from tests.conftest import make_app, migrate

pytestmark = pytest.mark.services


@pytest.fixture
def pg_app(postgres_url):
    app = make_app(postgres_url)
    migrate(app)
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def test_racing_requests_on_a_new_identifier_make_one_profile(pg_app):
    with pg_app.app_context():
        source_id = create_source(SYSTEM, "race", "http")[0].id
    threads, errors = 8, []
    barrier = threading.Barrier(threads)

    def send(n: int):
        try:
            with pg_app.app_context():
                source = db.session.get(Source, source_id)
                barrier.wait()
                # Same phone, a different device each: all must land on one person.
                ingest(
                    source,
                    [
                        {
                            "type": "identify",
                            "anonymousId": f"device-{n}",
                            "traits": {"phone": "13700001111"},
                            "messageId": f"m-{n}",
                        }
                    ],
                )
                db.session.remove()
        except Exception as exc:  # surfaced below
            errors.append(exc)

    workers = [threading.Thread(target=send, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    with pg_app.app_context():
        live = db.session.scalars(sa.select(Profile).where(Profile.merged_into_id.is_(None))).all()
        assert len(live) == 1
        phones = db.session.scalars(sa.select(Identity).where(Identity.type == "phone")).all()
        assert len(phones) == 1
        devices = db.session.scalar(
            sa.select(sa.func.count()).select_from(Identity).where(Identity.type == "anonymous_id")
        )
        assert devices == threads
        owners = set(db.session.scalars(sa.select(Event.profile_id)))
        assert owners == {live[0].id}


def test_ingest_and_merge_work_on_postgresql(pg_app):
    with pg_app.app_context():
        source = create_source(SYSTEM, "pg", "http")[0]
        ingest(
            source, [{"type": "identify", "anonymousId": "a", "traits": {"phone": "13700002222"}}]
        )
        ingest(source, [{"type": "identify", "userId": "u", "traits": {"name": "赵敏"}}])
        result = ingest(
            source,
            [
                {
                    "type": "track",
                    "event": "link",
                    "userId": "u",
                    "traits": {"phone": "13700002222"},
                },
                {"type": "track", "event": "link", "userId": "u", "messageId": "dup"},
                {"type": "track", "event": "link", "userId": "u", "messageId": "dup"},
            ],
        )
        assert (result.accepted, result.duplicates) == (2, 1)
        live = db.session.scalars(sa.select(Profile).where(Profile.merged_into_id.is_(None))).all()
        assert len(live) == 1
