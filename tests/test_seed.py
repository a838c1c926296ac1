"""The demo data generator and `cdp seed-demo`: determinism, counts, PII at rest, the CLI."""

from __future__ import annotations

import re
import statistics
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa

from cdp.actors import SYSTEM
from cdp.auth.accounts import authenticate
from cdp.db import db
from cdp.models import Event, Identity, JobRun, Profile, Source, User
from cdp.pii import vault
from cdp.profiles import decrypt_profile_pii
from cdp.seed import vocab
from cdp.seed.demo import PHONE_AAD, seed_demo

NOW = datetime(2025, 6, 1, 4, 30, tzinfo=UTC)
PATIENTS, DOCTORS = 300, 30
PURCHASES = ("pos_purchase", "order_completed")
PATIENT_TRAITS = {"gender", "birth_date", "city", "city_tier", "preferred_channel", "member_since"}
HCP_TRAITS = {"hospital", "department", "title", "city", "city_tier", "verification"}


def _count(model, *where) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model).where(*where))


def _seed(seed=42, patients=PATIENTS, doctors=DOCTORS) -> dict:
    return seed_demo(SYSTEM, patients, doctors, seed, now=NOW)


def _snapshot() -> dict:
    """Everything generated, decrypted, in id order (ciphertexts differ by nonce, not content)."""
    profiles = [
        (p.id, p.kind, p.traits, decrypt_profile_pii(p.pii_encrypted), p.first_seen_at)
        for p in db.session.scalars(sa.select(Profile).order_by(Profile.id))
    ]
    identities = [
        (i.profile_id, i.type, i.namespace, i.value_index, i.source_id, i.created_at)
        for i in db.session.scalars(sa.select(Identity).order_by(Identity.id))
    ]
    events = [
        (e.profile_id, e.source_id, e.message_id, e.type, e.name, e.timestamp, e.properties)
        for e in db.session.scalars(sa.select(Event).order_by(Event.id))
    ]
    return {"profiles": profiles, "identities": identities, "events": events}


def _wipe() -> None:
    for model in (Event, Identity, Profile, Source):
        db.session.execute(sa.delete(model))
    db.session.commit()


def _run_json(runner, *args) -> dict:
    result = runner.invoke(args=["seed-demo", *args, "--json"])
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout)


def test_same_seed_gives_the_same_data_and_another_seed_does_not(app):
    with app.app_context():
        _seed(seed=7)
        first = _snapshot()
        _wipe()
        _seed(seed=7)
        assert _snapshot() == first
        _wipe()
        _seed(seed=8)
        other = _snapshot()
    names = [p[3]["name"] for p in first["profiles"]]
    assert [p[3]["name"] for p in other["profiles"]] != names
    assert [p[3].get("phone") for p in other["profiles"]] != [
        p[3].get("phone") for p in first["profiles"]
    ]
    assert [e[2] for e in other["events"]] != [e[2] for e in first["events"]]


def test_counts_match_the_flags_and_json_is_one_object(app, runner):
    result = runner.invoke(args=["seed-demo", "--patients", "120", "--doctors", "12", "--json"])
    assert result.exit_code == 0, result.output
    assert len(result.stdout.strip().splitlines()) == 1
    payload = orjson.loads(result.stdout)
    assert {"patients", "doctors", "events", "sources", "admin"} <= payload.keys()
    assert (payload["patients"], payload["doctors"]) == (120, 12)
    assert "%]" in result.stderr  # progress goes to stderr
    with app.app_context():
        assert _count(Profile, Profile.kind == "patient") == 120
        assert _count(Profile, Profile.kind == "hcp") == 12
        assert _count(Event) == payload["events"]
        # ~10 events a patient on average, skewed: some people are far busier than others.
        assert 6 * 120 < payload["events"] < 16 * 120
        ids = set(db.session.scalars(sa.select(Source.id)))
        kinds = dict(db.session.execute(sa.select(Source.id, Source.kind)).all())
        job = db.session.scalar(sa.select(JobRun).where(JobRun.kind == "seed-demo"))
        assert (job.status, job.progress, job.total) == ("succeeded", 132, 132)
    assert set(payload["sources"]) == ids
    assert {"src_demo_wechat", "src_demo_miniprogram", "src_demo_pos", "src_demo_ecommerce"} <= ids
    assert sorted(kinds.values()) == ["ecommerce", "http", "miniprogram", "pos", "wechat"]


def test_no_plaintext_pii_in_the_database_file_but_phones_are_found_by_blind_index(app):
    with app.app_context():
        _seed()
        rows = db.session.execute(
            sa.select(Profile.id, Profile.pii_encrypted).where(Profile.kind == "patient")
        ).all()
        people = {profile_id: decrypt_profile_pii(blob) for profile_id, blob in rows}
        phones = [p["phone"] for p in people.values() if "phone" in p]
        assert len(phones) == len(set(phones)) > PATIENTS // 2
        assert all(re.fullmatch(r"\+861[3-9]\d{9}", phone) for phone in phones)
        for profile_id, pii in list(people.items())[:50]:
            if "phone" not in pii:
                continue
            index = vault().blind_index("phone", pii["phone"])
            identity = db.session.scalar(
                sa.select(Identity).where(Identity.type == "phone", Identity.value_index == index)
            )
            assert identity.profile_id == profile_id
            assert vault().decrypt(identity.value_encrypted, PHONE_AAD).decode() == pii["phone"]
        people_traits = dict(db.session.execute(sa.select(Profile.id, Profile.traits)).all())
        for traits in people_traits.values():
            assert not {"name", "phone"} & traits.keys()
        db.session.remove()
        db.engine.dispose()  # checkpoints the WAL; both files are read below anyway
    path = Path(app.config["SQLALCHEMY_DATABASE_URI"].removeprefix("sqlite:///"))
    data = b"".join(f.read_bytes() for f in path.parent.glob(path.name + "*"))
    # Controls: the files hold the data, and JSON columns store Chinese text as UTF-8.
    city = next(iter(people_traits.values()))["city"]
    assert b"src_demo_wechat" in data and city.encode() in data
    names = [p["name"] for p in people.values() if len(p["name"]) == 3][:20]
    for value in names + phones[:20] + [phone.removeprefix("+86") for phone in phones[:20]]:
        assert value.encode() not in data, value
        assert value.encode("unicode_escape") not in data, value  # as JSON would escape it


def test_events_reference_existing_profiles_and_matching_sources(app):
    with app.app_context():
        _seed()
        orphans = (
            sa.select(sa.func.count())
            .select_from(Event)
            .outerjoin(Profile, Profile.id == Event.profile_id)
            .where(Profile.id.is_(None))
        )
        assert db.session.scalar(orphans) == 0
        kinds = dict(db.session.execute(sa.select(Source.id, Source.kind)).all())
        by_profile = defaultdict(list)
        for event in db.session.scalars(sa.select(Event)):
            assert kinds[event.source_id] == event.context["channel"]
            assert event.timestamp <= NOW and event.timestamp >= NOW - timedelta(days=366)
            assert event.received_at >= event.timestamp
            by_profile[event.profile_id].append(event.timestamp)
        for profile in db.session.scalars(sa.select(Profile)):
            times = by_profile[profile.id]
            assert (profile.first_seen_at, profile.last_seen_at) == (min(times), max(times))
            assert profile.created_at == profile.first_seen_at
            expected = PATIENT_TRAITS if profile.kind == "patient" else HCP_TRAITS
            derived = set(profile.traits) - expected  # set by the channel events' traits
            assert expected <= set(profile.traits)
            assert all(k == "wechat_subscribed" or k.startswith("refill_run_out_") for k in derived)
        for identity in db.session.scalars(sa.select(Identity)):
            assert identity.source_id in kinds
        licences = db.session.scalars(
            sa.select(Identity.value_index).where(Identity.type == "hcp_license")
        ).all()
        assert len(licences) == DOCTORS and all(re.fullmatch(r"\d{15}", v) for v in licences)


def test_channel_events_are_what_the_connectors_parsers_make_of_provider_payloads(app):
    with app.app_context():
        _seed(patients=PATIENTS, doctors=0)
        by_name = defaultdict(list)
        for event in db.session.scalars(sa.select(Event).order_by(Event.timestamp)):
            by_name[event.name].append(event)
        traits = dict(db.session.execute(sa.select(Profile.id, Profile.traits)).all())
    # WeChat: a follow from a parametric QR code carries the scene as a campaign.
    follows = by_name["subscribe"]
    scanned = [e for e in follows if "qr_scene" in e.properties]
    assert 0 < len(scanned) < len(follows)
    for event in scanned:
        scene = event.properties["qr_scene"]
        assert event.context["campaign"] == {"source": "wechat", "medium": "qrcode", "name": scene}
        assert event.properties["app_id"] == vocab.WECHAT_OA_APP_ID
        assert event.message_id.startswith("wx:")  # the push's dedupe key: openid:CreateTime:…
        assert event.context["externalIdTypes"] == ["wechat_openid"]
        assert traits[event.profile_id]["wechat_subscribed"] is True
    assert {e.properties["event_key"] for e in by_name["menu_click"]} <= set(vocab.MENU_CLICKS)
    assert by_name["message_received"]
    for event in by_name["message_received"]:
        assert event.message_id.startswith("wx:msg:") and event.properties["msg_type"] == "text"
    # POS: the upload's lines, and the refill forecast the parser derives per medicine.
    forecast = {}
    for event in by_name["pos_purchase"]:
        props = event.properties
        assert event.message_id == f"pos:{props['store_code']}:{props['txn_no']}"
        assert props["partner"] == props["store_code"].split("-")[0].lower()
        for item in props["items"]:
            assert item["days_of_supply"] == item["qty"] * item["unit_days_of_supply"]
            run_out = event.timestamp.astimezone(vocab.CST).date() + timedelta(
                days=item["days_of_supply"]
            )
            forecast[(event.profile_id, item["drug_code"])] = run_out.isoformat()
    assert len(forecast) > 50
    for (profile_id, code), run_out in forecast.items():
        assert traits[profile_id][f"refill_run_out_{code}"] == run_out  # the latest purchase's
    # Shops: Youzan pushes and Tmall / JD exports, deduped per order like the endpoints.
    orders = by_name["order_completed"]
    assert {e.properties["platform"] for e in orders} == {"jd", "tmall", "youzan"}
    for event in orders:
        props = event.properties
        assert event.message_id == f"{props['platform']}:{props['order_id']}:order_completed"
    mini = [e for e in by_name["page_view"] if e.context["channel"] == "miniprogram"]
    assert mini and all(e.message_id.startswith("mp:o") for e in mini)


def test_rx_purchases_only_carry_rx_drugs_and_refills_follow_days_of_supply(app):
    with app.app_context():
        _seed(patients=500, doctors=0)
        purchases = db.session.execute(
            sa.select(Event.profile_id, Event.timestamp, Event.properties)
            .where(Event.name.in_(PURCHASES))
            .order_by(Event.timestamp)
        ).all()
        hcp_ids = set(db.session.scalars(sa.select(Profile.id).where(Profile.kind == "hcp")))
    rx_lines, bought = 0, defaultdict(list)
    for profile_id, timestamp, properties in purchases:
        assert profile_id not in hcp_ids
        for item in properties["items"]:
            drug = vocab.DRUG_BY_CODE[item["drug_code"]]
            assert item["rx"] is drug.rx and item["name"] == drug.name
            if drug.rx:
                rx_lines += 1
            if drug.chronic:
                bought[(profile_id, drug.code)].append((timestamp, item["days_of_supply"]))
        total = sum(i["unit_price"] * i["qty"] for i in properties["items"])
        assert properties["total_cny"] == pytest.approx(total)
    assert rx_lines > 100
    # A chronic patient comes back when the last purchase runs out, give or take.
    ratios = [
        (later[0] - earlier[0]).days / earlier[1]
        for times in bought.values()
        for earlier, later in zip(times, times[1:], strict=False)
    ]
    assert len(ratios) > 200
    assert 0.85 < statistics.median(ratios) < 1.25


def test_if_empty_leaves_a_seeded_database_unchanged(app, runner):
    first = _run_json(runner, "--patients", "50", "--doctors", "5")
    tables = (Profile, Identity, Event, Source, User, JobRun)
    with app.app_context():
        before = [_count(model) for model in tables]
    result = runner.invoke(args=["seed-demo", "--if-empty"])
    assert result.exit_code == 0, result.output
    assert "Database already has data; not seeding." in result.stdout
    assert f"Demo login: admin@carepath.demo / {first['admin']['password']}" in result.stdout
    with app.app_context():
        assert [_count(model) for model in tables] == before
    skipped = _run_json(runner, "--if-empty")
    assert skipped["skipped"] is True and skipped["admin"] == first["admin"]


def test_a_second_run_adds_new_people_without_collisions(app):
    with app.app_context():
        _seed(patients=100, doctors=10)
        _seed(patients=100, doctors=10)
        assert _count(Profile) == 220
        phones = db.session.scalars(
            sa.select(Identity.value_index).where(Identity.type == "phone")
        ).all()
        assert len(phones) == len(set(phones))


def test_demo_admin_can_log_in_and_the_password_is_kept_privately(app, runner):
    payload = _run_json(runner, "--patients", "10", "--doctors", "1")
    admin = payload["admin"]
    assert admin["email"] == "admin@carepath.demo" and len(admin["password"]) >= 10
    credentials = Path(app.instance_path) / "demo-admin.txt"
    assert credentials.stat().st_mode & 0o777 == 0o600
    stored = orjson.loads(credentials.read_bytes())
    assert stored["admin@carepath.demo"] == admin["password"]
    with app.app_context():
        user = authenticate(SYSTEM, admin["email"], admin["password"])
        assert user is not None and user.role == "admin"
        for email, role, _name in vocab.DEMO_USERS[1:]:
            assert authenticate(SYSTEM, email, stored[email]).role == role
    credentials.unlink()
    result = runner.invoke(args=["seed-demo", "--if-empty"])
    assert result.exit_code == 0
    assert "password not on file" in result.stdout
