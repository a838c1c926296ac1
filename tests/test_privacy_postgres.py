"""Content guards, consent events, erasure and retention on PostgreSQL (JSONB, upserts)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from cdp.actors import SYSTEM
from cdp.consent import has_consent
from cdp.content.credits import credits_of
from cdp.db import db
from cdp.models import Event
from cdp.privacy import erasure, export, retention
from cdp.profiles import find_by_identifier
from cdp.sources import create_source
from tests.conftest import make_app, migrate
from tests.test_privacy import NAME, PHONE, build_person, scan_database, send

pytestmark = pytest.mark.services


@pytest.fixture
def app_ctx(postgres_url):
    app = make_app(postgres_url)
    migrate(app)
    with app.app_context():
        yield app
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def source(app_ctx):
    return create_source(SYSTEM, "患者服务号", "http")[0]


@pytest.fixture
def person(source) -> int:
    return build_person(source)


def test_consent_events_credits_export_and_erasure_on_postgresql(app_ctx, person, source):
    assert has_consent(person, "marketing", "sms") and has_consent(person, "health_data")
    assert credits_of(person, "MP-T1") == 1
    send(
        source,
        {
            "type": "track",
            "userId": "member-ouyang-42",
            "event": "x",
            "properties": {"results": {"MP-T1": "accept"}},
        },
    )
    assert credits_of(person, "MP-T1") == 2
    bundle = export.export_person(SYSTEM, person)
    assert any(p["personal_data"].get("name") == NAME for p in bundle["profiles"])
    assert scan_database()
    erasure.run_erasure(erasure.request_erasure(SYSTEM, person).id)
    db.session.expire_all()
    assert scan_database() == []
    assert find_by_identifier("phone", "", PHONE) is None


def test_retention_on_postgresql(app_ctx, source):
    send(
        source,
        {"type": "track", "userId": "r", "event": "old", "timestamp": "2020-01-01T00:00:00Z"},
    )
    retention.set_rule(SYSTEM, "*", 30)
    assert retention.purge_expired_events() == {"*": 1}
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Event)) == 0


def test_key_rotation_on_postgresql(app_ctx, person):
    from cdp.privacy import keys

    result = keys.rotate_key(SYSTEM, "a-brand-new-pii-key-for-2027")
    assert result["key_id"] == 2 and result["reencrypted"] > 0
    assert keys.remaining(2) == 0
