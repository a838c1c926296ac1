"""PIPL export and erasure: everything about a person comes out, then nothing of them is left.

The erasure test scans every column of every table of the schema (and every decryptable
payload) for the person's phone, name, e-mail, ids and blind-index values afterwards.
"""

from __future__ import annotations

import io
import zipfile

import orjson
import pytest
import sqlalchemy as sa

from cdp.actors import SYSTEM, Actor
from cdp.consent import has_consent, record_consent
from cdp.db import db, utcnow
from cdp.exceptions import Conflict, PermissionDenied
from cdp.identity.types import make_identifier
from cdp.ingest.messages import Candidate
from cdp.ingest.pipeline import ingest
from cdp.ingest.tasks import process_batch
from cdp.models import AuditEntry, Identity, JobRun, Profile, Violation
from cdp.models.privacy import PrivacyRequest, Tombstone
from cdp.pii import vault
from cdp.privacy import erasure, export, tombstones
from cdp.profiles import find_by_identifier, name_index
from cdp.sources import create_source

PHONE = "13957218364"
E164 = "+86" + PHONE
NAME = "欧阳娜娜"
EMAIL = "nana.ouyang@example.cn"
OPENID = "oWx_ouyang_openid_777"
USER_ID = "member-ouyang-42"
ANON = "anon-ouyang-9f3c"
UNIONID = "unionid-ouyang-5"
NOW = utcnow()


@pytest.fixture
def source(app_ctx):
    return create_source(SYSTEM, "患者服务号", "http")[0]


def send(source, *messages):
    result = ingest(source, list(messages))
    if result.outbox_id:
        process_batch(result.outbox_id)
    return result


@pytest.fixture
def person(source) -> int:
    return build_person(source)


def build_person(source) -> int:
    """One person seen as two profiles (merged), with events, consents, a violation, credits."""
    send(
        source,
        {
            "type": "identify",
            "anonymousId": ANON,
            "traits": {"name": NAME, "phone": PHONE, "city": "杭州", "birth_date": "1990-02-03"},
            "context": {
                "externalIds": [{"type": "wechat_openid", "id": OPENID, "collection": "wxapp"}]
            },
        },
        {"type": "track", "anonymousId": ANON, "event": "article_read", "properties": {"id": 7}},
    )
    send(source, {"type": "identify", "userId": USER_ID, "traits": {"email": EMAIL}})
    send(  # links the two: one person, one merge
        source,
        {
            "type": "identify",
            "userId": USER_ID,
            "traits": {"phone": PHONE, "consents": {"sms": True, "health_data": True}},
            "context": {"externalIds": [{"type": "wechat_unionid", "id": UNIONID}]},
        },
        {
            "type": "track",
            "userId": USER_ID,
            "event": "subscribe_accepted",
            "properties": {"template_id": "MP-T1"},
        },
    )
    # A rejected event of theirs: kept encrypted in violations, linked to no profile.
    send(source, {"type": "track", "userId": USER_ID, "traits": {"phone": PHONE}})
    profile = find_by_identifier("phone", "", PHONE)
    record_consent(SYSTEM, profile.id, "marketing", "wechat", "granted")
    db.session.commit()
    return profile.id


@pytest.fixture
def bystander(source) -> int:
    send(
        source,
        {
            "type": "identify",
            "userId": "someone-else",
            "traits": {"phone": "13700001111", "name": "张伟"},
        },
    )
    return find_by_identifier("user_id", "", "someone-else").id


def test_export_has_everything_about_the_person_and_is_audited(person):
    admin = Actor(kind="system", role="admin", request_id="test")
    bundle = export.export_person(admin, person)
    assert bundle["profile_id"] == person and len(bundle["profile_ids"]) == 2
    values = {i["value"] for i in bundle["identifiers"]}
    assert {E164, EMAIL, OPENID, USER_ID, ANON, UNIONID} <= values
    assert any(p["personal_data"].get("name") == NAME for p in bundle["profiles"])
    assert {e["name"] for e in bundle["events"]} >= {"article_read", "subscribe_accepted"}
    assert {(c["purpose"], c["channel"]) for c in bundle["consents"]} >= {
        ("marketing", "sms"),
        ("health_data", "*"),
        ("marketing", "wechat"),
    }
    assert len(bundle["merges"]) == 1
    assert bundle["subscribe_credits"][0]["credits"] == 1
    assert bundle["violations"] == []  # the rejected event's message id is not one of theirs
    archive = zipfile.ZipFile(io.BytesIO(export.bundle_zip(bundle)))
    assert {"export.json", "profiles.csv", "identifiers.csv", "events.csv"} <= set(
        archive.namelist()
    )
    assert PHONE in archive.read("identifiers.csv").decode("utf-8-sig")
    assert orjson.loads(archive.read("export.json"))["profile_id"] == person
    row = db.session.scalar(sa.select(AuditEntry).where(AuditEntry.action == "privacy.export"))
    assert row.object_id == str(person) and NAME not in orjson.dumps(row.details).decode()
    assert db.session.scalar(sa.select(PrivacyRequest.kind)) == "export"


def test_export_needs_the_privacy_permission(person):
    with pytest.raises(PermissionDenied):
        export.export_person(Actor(kind="user", user_id=1, role="marketer"), person)


def needles() -> list[str]:
    v = vault()
    return [
        PHONE,
        E164,
        NAME,
        EMAIL,
        OPENID,
        USER_ID,
        ANON,
        UNIONID,
        v.blind_index("phone", E164),
        v.blind_index("email", EMAIL),
        name_index({"name": NAME}),
    ]


def scan_database() -> list[str]:
    """Every table, every column, every row: where does any needle still appear?"""
    found = []
    inspector = sa.inspect(db.engine)
    for table in inspector.get_table_names():
        columns = [c["name"] for c in inspector.get_columns(table)]
        quoted = ", ".join(f'"{c}"' for c in columns)
        rows = db.session.execute(sa.text(f'SELECT {quoted} FROM "{table}"'))
        for row in rows:
            for column, value in zip(columns, row, strict=True):
                if value is None:
                    continue
                if isinstance(value, memoryview):  # binary columns on PostgreSQL
                    value = bytes(value)
                raw = value if isinstance(value, bytes) else str(value).encode()
                for needle in needles():
                    if needle.encode() in raw or needle.encode("unicode_escape") in raw:
                        found.append(f"{table}.{column}: {needle}")
    for violation_id, source_id, blob in db.session.execute(
        sa.select(Violation.id, Violation.source_id, Violation.payload_encrypted)
    ):
        text = vault().decrypt(bytes(blob), source_id.encode()).decode()
        found += [f"violations#{violation_id} payload: {n}" for n in needles() if n in text]
    return found


def test_erasure_leaves_no_trace_in_any_table_and_keeps_a_tombstone(person, bystander, source):
    assert scan_database()  # the scan does find the person before
    request = erasure.request_erasure(SYSTEM, person, "data subject request")
    job = db.session.get(JobRun, request.job_id)
    assert job.params == {"request_id": request.id}
    assert erasure.run_erasure(request.id) == "completed"
    assert erasure.run_erasure(request.id) == "nothing to do"  # a retried job is a no-op
    db.session.expire_all()
    leftovers = scan_database()
    assert leftovers == [], leftovers
    request = db.session.get(PrivacyRequest, request.id)
    assert request.status == "completed" and request.result["rows"]["events"] == 5
    assert db.session.get(JobRun, request.job_id).status == "succeeded"
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Tombstone)) == 6
    # The bystander is untouched.
    assert find_by_identifier("phone", "", "13700001111").id == bystander
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Violation)) == 0
    audit = db.session.scalar(sa.select(AuditEntry).where(AuditEntry.action == "privacy.erase"))
    assert audit.object_id == str(person)


def test_events_of_an_erased_person_are_suppressed_until_they_re_consent(person, source):
    erasure.run_erasure(erasure.request_erasure(SYSTEM, person).id)
    phone = make_identifier(vault(), "phone", PHONE)
    openid = make_identifier(vault(), "wechat_openid", OPENID, "wxapp")
    other = make_identifier(vault(), "phone", "13700002222")
    assert tombstones.any_tombstones()
    assert tombstones.suppressed([phone])
    assert tombstones.suppressed([other, openid])
    assert not tombstones.suppressed([other])
    message = {"type": "identify", "traits": {"phone": PHONE}}
    signup = {"type": "identify", "traits": {"phone": PHONE, "consents": {"sms": True}}}
    batch = [([phone], message), ([other], message), ([phone], signup), ([openid], None)]
    assert tombstones.suppressed_many(batch) == {0, 3}  # the re-consenting signup goes through
    kept, dropped = tombstones.filter_batch(
        [
            Candidate(0, message, "m1", "identify", None, NOW, [phone]),
            Candidate(1, signup, "m2", "identify", None, NOW, [phone]),
        ]
    )
    assert ([c.message_id for c in kept], dropped) == (["m2"], 1)
    db.session.commit()  # the signup's batch commits: the phone's tombstone is gone
    assert not tombstones.suppressed([phone], message)
    assert tombstones.suppressed([openid])  # the others stay


def test_erasure_of_a_merged_id_erases_the_whole_person(person, source):
    merged = db.session.scalar(sa.select(Profile.id).where(Profile.merged_into_id == person))
    request = erasure.request_erasure(SYSTEM, merged)
    assert request.profile_id == person
    erasure.run_erasure(request.id)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Identity)) == 0
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Profile)) == 0


def test_a_second_pending_erasure_is_refused_and_marketers_cannot_erase(person):
    erasure.request_erasure(SYSTEM, person)
    with pytest.raises(Conflict):
        erasure.request_erasure(SYSTEM, person)
    with pytest.raises(PermissionDenied):
        erasure.request_erasure(Actor(kind="user", user_id=1, role="marketer"), person)


def test_erasure_hook_and_consent_records_go_too(person, source):
    seen = []
    erasure.register_erasure_hook("test", lambda profiles, events: seen.append(len(events)) or 0)
    try:
        assert has_consent(person, "marketing", "sms")
        erasure.run_erasure(erasure.request_erasure(SYSTEM, person).id)
        assert seen == [5]
        assert not has_consent(person, "marketing", "sms")
    finally:
        erasure.ERASURE_HOOKS.pop("test")


def test_ingestion_drops_an_erased_persons_new_events_until_re_consent(person, source):
    """The tombstones left by an erasure keep the person erased against new events."""
    erasure.run_erasure(erasure.request_erasure(SYSTEM, person).id)
    again = ingest(source, [{"type": "identify", "userId": USER_ID, "traits": {"city": "杭州"}}])
    assert (again.accepted, again.suppressed) == (0, 1)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Profile)) == 0
    back = ingest(
        source, [{"type": "identify", "userId": USER_ID, "traits": {"consents": {"sms": True}}}]
    )
    assert back.accepted == 1
    assert find_by_identifier("user_id", "", USER_ID) is not None
