"""The demo data generator: seeded patients, doctors and a year of omnichannel events, in bulk.

Rows are built as plain dicts and written with Core ``executemany`` in batches
(``cdp.seed.bulk``), with profile ids assigned here, so 100k patients and a million events
take minutes, not hours. Everything drawn comes from one ``random.Random(seed)``; times are
offsets from ``now``, so the same seed and ``now`` give the same people and events. Patients'
purchases are drawn in ``cdp.seed.purchases``; consents (``cdp.seed.consents``) come from a
second generator seeded alike, so adding them left the people and events of a seed as they were.
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import accumulate

import sqlalchemy as sa

from cdp import audit, jobs
from cdp.actors import Actor
from cdp.auth.permissions import require
from cdp.db import db, transaction, utcnow
from cdp.exceptions import ValidationFailed
from cdp.identity.blocklist import current_blocklist
from cdp.identity.traits import apply_by_time
from cdp.ingest.messages import Preparer
from cdp.models import Profile, Source
from cdp.pii import PiiVault, vault
from cdp.profiles import encrypt_profile_pii, name_index
from cdp.seed import bulk, vocab
from cdp.seed import wire as seed_wire
from cdp.seed.consents import ConsentDraws
from cdp.seed.events import ChannelEvents
from cdp.seed.purchases import Shopping
from cdp.sources import SOURCE_KINDS, create_source

# Associated data bound into every encrypted profile PII blob and phone identity value.
PHONE_AAD = b"phone"

CHANNELS = ("wechat", "miniprogram", "pos", "ecommerce")
CHUNK = 2000  # profiles generated, inserted and committed together
WINDOW_DAYS, CST = vocab.WINDOW_DAYS, vocab.CST
URLSAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
PROFILE_COLUMNS = ("id", "kind", "traits", "trait_times", "pii_encrypted", "merged_into_id")
PROFILE_COLUMNS += ("created_at", "updated_at", "first_seen_at", "last_seen_at", "name_index")
IDENTITY_COLUMNS = ("profile_id", "type", "namespace", "value_index", "value_encrypted")
IDENTITY_COLUMNS += ("source_id", "created_at")

Progress = Callable[[int, int, str], None]


def database_has_profiles() -> bool:
    return db.session.scalar(sa.select(Profile.id).limit(1)) is not None


def ensure_demo_sources(actor: Actor) -> tuple[dict[str, str], str | None]:
    """Create the missing demo sources; return channel -> source id and a new HTTP write key."""
    with transaction() as session:
        for source_id, kind, name, options in vocab.DEMO_SOURCES.values():
            if session.get(Source, source_id) is not None:
                continue
            # Rows, not create_source: these kinds' connectors may not be registered yet.
            secret = "app_secret" if kind in ("wechat", "miniprogram") else "api_secret"
            options = {**options, secret: secrets.token_urlsafe(24)}
            blob = vault().encrypt_json(options, source_id.encode())
            row = Source(id=source_id, name=name, kind=kind, options_encrypted=blob)
            row.created_by_id = actor.user_id
            session.add(row)
            session.flush()
            audit.record(actor, "source.create", "source", source_id, kind=kind, demo=True)
    ids = {channel: spec[0] for channel, spec in vocab.DEMO_SOURCES.items()}
    query = sa.select(Source.id).where(Source.kind == "http", Source.name == vocab.HTTP_SOURCE_NAME)
    http_id, write_key = db.session.scalar(query), None
    if http_id is None and "http" in SOURCE_KINDS:
        source, write_key = create_source(actor, vocab.HTTP_SOURCE_NAME, "http", {"channel": "web"})
        http_id = source.id
    if http_id is not None:
        ids["http"] = http_id
    return ids, write_key


class _Person:
    __slots__ = ("id", "channels", "store", "platform", "events", "identities", "phone")
    __slots__ += ("openid", "mp_openid", "unionid", "card", "buyer", "message_ids", "traits_seen")

    def __init__(self, profile_id: int, channels: tuple[str, ...]):
        self.id, self.channels = profile_id, channels
        self.store: vocab.Store | None = None
        self.platform: str | None = None
        self.events: list[dict] = []
        self.identities: list[tuple] = []  # (type, namespace, value_index, encrypted, channel)
        # What the channels know the person by, for the payloads they send.
        self.phone = self.openid = self.mp_openid = self.unionid = None
        self.card = self.buyer = None
        self.message_ids: set[str] = set()  # dedupe keys taken (ingestion's per-source check)
        self.traits_seen: list[tuple[datetime, dict]] = []  # (event time, traits it carried)


class _Generator(ConsentDraws, Shopping, ChannelEvents):
    """Draws people and their events from one RNG into row buffers for bulk insert."""

    def __init__(
        self,
        rng: random.Random,
        pii_vault: PiiVault,
        now: datetime,
        source_ids,
        taken,
        consent_rng: random.Random,
        wire: seed_wire.DemoWire,
    ):
        self.rng, self.vault, self.now = rng, pii_vault, now
        self.consent_rng, self.wire = consent_rng, wire
        self.preparer = Preparer(pii_vault, current_blocklist(), now)
        self.source_ids = source_ids
        self.taken: set[tuple[str, str, str]] = taken  # identity keys in use
        midnight = now.astimezone(CST).replace(hour=0, minute=0, second=0, microsecond=0)
        self.day0 = (midnight - timedelta(days=WINDOW_DAYS)).astimezone(UTC)
        self.hour_cum = list(accumulate(vocab.HOUR_WEIGHTS))
        self.city_cum = list(accumulate(c.weight for c in vocab.CITIES))
        self.age_cum = list(accumulate(band[2] for band in vocab.AGE_BANDS))
        self.stores = {c.name: vocab.stores_in(c) for c in vocab.CITIES}
        self.chronic_cum = list(accumulate(vocab.CHRONIC_RX_WEIGHTS))
        # Cold and flu remedies sell three times as well in winter.
        flu = [d.code in vocab.COLD_AND_FLU for d in vocab.OTC]
        self.otc_cum = {w: list(accumulate(3 if w and f else 1 for f in flu)) for w in (0, 1)}
        self.profiles: list[dict] = []
        self.identities: list[dict] = []
        self.events: list[dict] = []
        self.consents: list[dict] = []  # records, each key's in the order they were given

    def at(self, day: float) -> datetime:
        """A realistic local time of day on day ``day`` of the window, never after now."""
        rng = self.rng
        hour = rng.choices(range(24), cum_weights=self.hour_cum)[0]
        ts = self.day0 + timedelta(days=int(day), hours=hour, seconds=rng.randrange(3600))
        return ts if ts <= self.now else self.now - timedelta(seconds=rng.randrange(60, 7200))

    def unique(self, type_: str, namespace: str, make: Callable[[], str]) -> str:
        while (key := (type_, namespace, make())) in self.taken:
            pass
        self.taken.add(key)
        return key[2]

    def phone(self) -> tuple[str, str]:
        """A fresh CN mobile number in E.164 and its blind index."""
        rng = self.rng
        while True:
            e164 = f"+86{rng.choice(vocab.PHONE_PREFIXES)}{rng.randrange(10**8):08d}"
            key = ("phone", "", self.vault.blind_index("phone", e164))
            if key not in self.taken:
                self.taken.add(key)
                return e164, key[2]

    def openid(self) -> str:
        return "o" + "".join(self.rng.choices(URLSAFE, k=27))

    def patient(self, profile_id: int) -> None:
        rng = self.rng
        gender = "female" if rng.random() < 0.52 else "male"
        low, high, _w, chronic_share = rng.choices(vocab.AGE_BANDS, cum_weights=self.age_cum)[0]
        age, drug = rng.randint(low, high), None
        if rng.random() < chronic_share:
            drug = rng.choices(vocab.CHRONIC_RX, cum_weights=self.chronic_cum)[0]
        city = rng.choices(vocab.CITIES, cum_weights=self.city_cum)[0]
        person = _Person(profile_id, self._channels(needs_purchase=drug is not None))
        start = rng.uniform(0, 330) if rng.random() < 0.35 else 0.0  # joined during the year
        end = WINDOW_DAYS if rng.random() < 0.8 else rng.uniform(min(start + 20, 364), 365)
        e164 = self._patient_identities(person, city)
        if "wechat" in person.channels and start > 0:
            self.wechat(person, "subscribe", self.at(start), self._follow_key(person))
        self._engagement(person, start, end)
        if drug is not None:
            self._refills(person, drug, start)
        self._otc(person, start, end)
        if "miniprogram" in person.channels and rng.random() < 0.5:
            when = self.at(rng.uniform(start, end))
            self.mini(person, None, when, traits={"city": city.name, "gender": gender})
        birth = self.now.astimezone(CST).date() - timedelta(days=age * 365 + rng.randrange(365))
        seen = [event["context"]["channel"] for event in person.events]
        traits = {"gender": gender, "birth_date": birth.isoformat(), "city": city.name}
        traits["city_tier"] = city.tier
        traits["preferred_channel"] = max(person.channels, key=seen.count)
        pii = {"name": vocab.full_name(rng, gender, old=age >= 55)}
        if e164:
            pii["phone"] = e164
        self._finish(person, "patient", traits, pii)

    def _channels(self, needs_purchase: bool) -> tuple[str, ...]:
        rng = self.rng
        chosen = {ch for ch, reach in vocab.CHANNEL_REACH if rng.random() < reach}
        if needs_purchase and not chosen & {"pos", "ecommerce"}:
            chosen.add("pos" if rng.random() < 0.7 else "ecommerce")
        if not chosen:
            chosen.add(rng.choice(CHANNELS))
        return tuple(ch for ch in CHANNELS if ch in chosen)

    def _patient_identities(self, person: _Person, city: vocab.City) -> str | None:
        rng, ids, channels = self.rng, person.identities, set(person.channels)
        e164 = None
        # Pharmacy and shop memberships are keyed on the phone number; others share it sometimes.
        if channels & {"pos", "ecommerce"} or rng.random() < 0.6:
            e164, index = self.phone()
            encrypted = self.vault.encrypt(e164.encode(), PHONE_AAD)
            ids.append(("phone", "", index, encrypted, person.channels[-1]))
            person.phone = e164
        if "wechat" in channels:
            person.openid = self.openid()
            ids.append(("wechat_openid", vocab.WECHAT_OA_APP_ID, person.openid, None, "wechat"))
        if "miniprogram" in channels:
            person.mp_openid = mp_openid = self.openid()
            ids.append(
                ("miniprogram_openid", vocab.MINIPROGRAM_APP_ID, mp_openid, None, "miniprogram")
            )
        if channels & {"wechat", "miniprogram"} and rng.random() < 0.8:
            person.unionid = self.openid()
            ids.append(("wechat_unionid", "", person.unionid, None, person.channels[0]))
        if "pos" in channels:
            person.store = rng.choice(self.stores[city.name])
            chain = person.store.chain
            card = self.unique("pharmacy_member", chain, lambda: f"{rng.randrange(10**12):012d}")
            ids.append(("pharmacy_member", chain, card, None, "pos"))
            person.card = card
        if "ecommerce" in channels:
            platforms = vocab.ECOMMERCE_PLATFORMS
            person.platform = rng.choices(platforms, weights=[p[2] for p in platforms])[0][0]
            buyer = person.platform + "_" + "".join(rng.choices(URLSAFE[26:62], k=12))
            ids.append(("ecommerce_buyer", person.platform, buyer, None, "ecommerce"))
            person.buyer = buyer
        return e164

    def _engagement(self, person: _Person, start: float, end: float) -> None:
        rng = self.rng
        touch = [ch for ch in person.channels if ch in ("wechat", "miniprogram")]
        if not touch:
            return
        # Log-normal: most people read a few things, a few read a great deal.
        for _ in range(max(1, min(int(rng.lognormvariate(1.3, 1.0)), 150))):
            ts, r = self.at(rng.uniform(start, end)), rng.random()
            if rng.choice(touch) == "wechat":
                self._wechat_touch(person, ts, r)
            elif r < 0.82:
                path, title = rng.choice(vocab.MINIPROGRAM_PAGES)
                self.mini(person, "page_view", ts, {"path": path, "title": title})
            else:
                coupon_id, title, value = rng.choice(vocab.COUPONS)
                props = {"coupon_id": coupon_id, "title": title, "value_cny": value}
                self.mini(person, "coupon_claimed", ts, props)

    def doctor(self, profile_id: int) -> None:
        rng = self.rng
        city = rng.choices(vocab.CITIES, cum_weights=self.city_cum)[0]
        gender = "male" if rng.random() < 0.55 else "female"
        person = _Person(profile_id, ("wechat",))
        # Practising-certificate numbers: 15 digits, the province code after the category digit.
        number = lambda: f"1{city.province}{rng.randrange(10**12):012d}"  # noqa: E731
        licence = self.unique("hcp_license", "", number)
        person.identities.append(("hcp_license", "", licence, None, "wechat"))
        person.openid = openid = self.openid()
        person.identities.append(("wechat_openid", vocab.WECHAT_OA_APP_ID, openid, None, "wechat"))
        for _ in range(rng.randint(1, 8)):
            ts = self.at(rng.uniform(0, WINDOW_DAYS))
            if rng.random() < 0.4:
                meeting_id, topic = rng.choice(vocab.MEETINGS)
                fmt = rng.choice(("online", "offline"))
                props = {"meeting_id": meeting_id, "topic": topic, "format": fmt}
                self.h5(person, "meeting_attended", ts, props)
            else:
                article_id, title = rng.choice(vocab.HCP_ARTICLES)
                props = {"article_id": article_id, "title": title}
                self.h5(person, "article_read", ts, props)
        traits = {
            "hospital": rng.choice(vocab.hospitals_in(city.name)),
            "department": rng.choices(*zip(*vocab.DEPARTMENTS, strict=True))[0],
            "title": rng.choices(*zip(*vocab.TITLES, strict=True))[0],
            "city": city.name,
            "city_tier": city.tier,
            "verification": "verified" if rng.random() < 0.7 else "unverified",
        }
        self._finish(person, "hcp", traits, {"name": vocab.full_name(rng, gender, old=True)})

    def _finish(self, person: _Person, kind: str, traits: dict, pii: dict) -> None:
        """Buffer the profile and identity rows, with times taken from the person's events."""
        person.events.sort(key=lambda e: e["timestamp"])
        first, last = person.events[0]["timestamp"], person.events[-1]["timestamp"]
        first_on: dict[str, datetime] = {}
        for event in person.events:
            first_on.setdefault(event["context"]["channel"], event["timestamp"])
        if kind == "patient":
            joined = first - timedelta(days=self.rng.randrange(0, 900))
            traits["member_since"] = joined.astimezone(CST).date().isoformat()
        trait_times: dict[str, str] = {}
        for at, seen in sorted(person.traits_seen, key=lambda pair: pair[0]):
            apply_by_time(traits, trait_times, seen, at)  # as ingestion merges them: latest wins
        blob = encrypt_profile_pii(pii, self.vault)
        values = (person.id, kind, traits, trait_times, blob, None, first, last, first, last)
        values += (name_index(pii, self.vault),)
        self.profiles.append(dict(zip(PROFILE_COLUMNS, values, strict=True)))
        for type_, namespace, value_index, encrypted, channel in person.identities:
            source_id, created = self.source_ids[channel], first_on.get(channel, first)
            values = (person.id, type_, namespace, value_index, encrypted, source_id, created)
            self.identities.append(dict(zip(IDENTITY_COLUMNS, values, strict=True)))
        self.events += person.events
        self._consents(person, kind, first, first_on, has_phone="phone" in pii)


def _generate(actor, job_id, patients, doctors, seed, now, progress) -> dict:
    wire = seed_wire.registered()
    if wire is None:
        raise ValidationFailed("the demo's channel events need the connectors component", "wire")
    source_ids, write_key = ensure_demo_sources(actor)
    first_id = (db.session.scalar(sa.select(sa.func.max(Profile.id))) or 0) + 1
    # On a database that already has people, shift the stream so a rerun adds new ones.
    rng = random.Random(seed if first_id == 1 else f"{seed}/{first_id}")
    taken = bulk.taken_identities() if first_id > 1 else set()
    consent_rng = random.Random(f"{seed}/consents/{first_id}")
    gen = _Generator(rng, vault(), now, source_ids, taken, consent_rng, wire)
    counts = {"profiles": 0, "identities": 0, "events": 0, "consents": 0}
    seconds = dict.fromkeys(("generate", *counts, "commit"), 0.0)  # where the time went
    total, next_id = patients + doctors, first_id
    for make, count, label in ((gen.patient, patients, "patients"), (gen.doctor, doctors, "hcp")):
        for chunk_start in range(0, count, CHUNK):
            started = time.perf_counter()
            for _ in range(min(CHUNK, count - chunk_start)):
                make(next_id)
                next_id += 1
            seconds["generate"] += time.perf_counter() - started
            bulk.write_batch(gen, counts, seconds)
            done = next_id - first_id
            message = f"{label}: {done}/{total} profiles, {counts['events']} events"
            jobs.report_progress(job_id, done, message)
            if progress is not None:
                progress(done, total, message)
    bulk.sync_profile_sequence()
    with transaction():
        audit.record(actor, "demo.seed", "job", job_id, seed=seed, **counts)
    result = {"patients": patients, "doctors": doctors, "events": counts["events"]}
    result.update(identities=counts["identities"], consents=counts["consents"])
    result.update(sources=list(source_ids.values()))
    result.update(write_key=write_key, job_id=job_id, first_profile_id=first_id)
    return {**result, "seconds": {key: round(value, 3) for key, value in seconds.items()}}


def seed_demo(
    actor: Actor,
    patients: int,
    doctors: int,
    seed: int,
    progress: Progress | None = None,
    now: datetime | None = None,
) -> dict:
    """Add demo sources, patients, doctors and a year of events up to ``now``; return counts.

    Each batch of profiles is committed with its identities and events, so a failure keeps
    the batches before it; the job run records how far it got.

    The result holds ``patients``, ``doctors``, ``events``, ``identities``, ``consents``
    (records), ``sources`` (ids), ``write_key`` (of a newly created HTTP source, else
    None), ``job_id``, ``first_profile_id`` and ``seconds`` (time spent generating, inserting each table, committing).
    """
    require(actor, "sources:edit")
    if patients < 0 or doctors < 0:
        raise ValidationFailed("patients and doctors must not be negative", "patients")
    now = now or utcnow()
    if now.tzinfo is None:
        raise ValidationFailed("now must be timezone-aware", "now")
    params = {"patients": patients, "doctors": doctors, "seed": seed}
    job = jobs.create_job(actor, "seed-demo", params, total=patients + doctors)
    jobs.mark_running(job.id, patients + doctors)
    try:
        result = _generate(actor, job.id, patients, doctors, seed, now, progress)
    except BaseException as exc:
        db.session.rollback()
        jobs.mark_finished(job.id, f"failed: {exc.__class__.__name__}: {exc}"[:500], failed=True)
        raise
    bulk.stamp_last_events(result["sources"])
    jobs.mark_finished(job.id, f"{patients} patients, {doctors} doctors, {result['events']} events")
    return result
