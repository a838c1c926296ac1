"""Consent: history is kept, the latest record wins, and SQL filters agree with the checks."""

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from cdp.actors import SYSTEM
from cdp.consent import granted_profiles, has_consent, record_consent
from cdp.db import db
from cdp.exceptions import ValidationFailed
from cdp.models import ConsentRecord, Profile

T0 = datetime(2026, 10, 1, tzinfo=UTC)


@pytest.fixture
def people(app_ctx):
    profiles = [Profile(kind="patient", traits={}) for _ in range(3)]
    db.session.add_all(profiles)
    db.session.commit()
    return [p.id for p in profiles]


def test_latest_record_wins_and_late_events_only_add_history(people):
    a = people[0]
    record_consent(SYSTEM, a, "marketing", "sms", "granted", at=T0)
    record_consent(SYSTEM, a, "marketing", "sms", "withdrawn", at=T0 + timedelta(days=2))
    # A grant that happened before the withdrawal but arrives late does not re-grant.
    record_consent(SYSTEM, a, "marketing", "sms", "granted", at=T0 + timedelta(days=1))
    db.session.commit()
    assert not has_consent(a, "marketing", "sms")
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ConsentRecord)) == 3


def test_no_record_means_no_consent_and_channel_wildcards(people):
    a, b, c = people
    record_consent(SYSTEM, b, "health_data", "*", "granted", at=T0)
    record_consent(SYSTEM, c, "marketing", "*", "granted", at=T0)
    record_consent(SYSTEM, c, "marketing", "wechat", "withdrawn", at=T0 + timedelta(hours=1))
    db.session.commit()
    assert not has_consent(a, "health_data")
    assert has_consent(b, "health_data")
    assert has_consent(c, "marketing", "sms")
    assert not has_consent(c, "marketing", "wechat")
    in_sql = set(db.session.scalars(granted_profiles("marketing", "sms")))
    assert in_sql == {c}
    assert set(db.session.scalars(granted_profiles("marketing", "wechat"))) == set()
    assert set(db.session.scalars(granted_profiles("health_data"))) == {b}


def test_unknown_purpose_is_refused(people):
    with pytest.raises(ValidationFailed) as excinfo:
        record_consent(SYSTEM, people[0], "lottery", "sms", "granted")
    assert excinfo.value.field == "purpose"


def test_consent_follows_a_merge_and_its_undo(app_ctx):
    from cdp.identity.merges import unmerge
    from cdp.ingest.pipeline import ingest
    from cdp.models import Merge
    from cdp.sources import create_source

    source = create_source(SYSTEM, "s", "http")[0]
    ingest(source, [{"type": "identify", "anonymousId": "a", "traits": {"phone": "13700003333"}}])
    ingest(source, [{"type": "identify", "userId": "u"}])
    phone_owner, user = db.session.scalars(sa.select(Profile.id).order_by(Profile.id)).all()
    # The newer profile's consent must move to the survivor (the older profile).
    record_consent(SYSTEM, user, "marketing", "sms", "granted", at=T0)
    db.session.commit()
    ingest(source, [{"type": "identify", "userId": "u", "traits": {"phone": "13700003333"}}])
    merge = db.session.scalar(sa.select(Merge))
    assert (merge.survivor_id, merge.merged_id) == (phone_owner, user)
    assert has_consent(phone_owner, "marketing", "sms")
    unmerge(SYSTEM, user)
    assert has_consent(user, "marketing", "sms")
    assert not has_consent(phone_owner, "marketing", "sms")
