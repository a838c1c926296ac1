"""Propensity features and labels: point in time (no leakage), labels, PIPL exclusions.

``build_world`` writes a generated population straight into the database (fast, and the
same for every test): patients whose chance of the target event ("coupon_claimed") rises
with how much they read and with living in a tier-1 city, plus purchases with days of
supply for the health-data features.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from cdp.actors import SYSTEM
from cdp.consent import record_consent
from cdp.db import db, utcnow
from cdp.models import Event, Identity, Profile
from cdp.sources import create_source
from segments.propensity import labels
from segments.propensity.common import local_midnight
from segments.propensity.features import compute_features

TARGET = "coupon_claimed"
DAYS = 420  # history generated before the end of the data


@dataclass
class World:
    end: datetime  # the last event is just before this
    source_id: str
    ids: list[int]
    consented: set[int]
    refused: set[int]

    def day(self, days_before_end: int) -> str:
        """A cutoff date (YYYY-MM-DD, local) some days before the end of the data."""
        return (self.end - timedelta(days=days_before_end)).astimezone(UTC).date().isoformat()

    def cutoff(self, days_before_end: int) -> datetime:
        return local_midnight(self.day(days_before_end), "Asia/Shanghai")


def _event(source_id, pid, name, ts, properties=None) -> dict:
    return {
        "source_id": source_id,
        "message_id": uuid.uuid4().hex,
        "profile_id": pid,
        "type": "track",
        "name": name,
        "timestamp": ts,
        "received_at": ts,
        "properties": properties or {},
        "context": {},
    }


def build_world(n: int = 600, seed: int = 7, signal: bool = True) -> World:
    """``n`` patients with a year of reads, purchases and the target event (in app context)."""
    rng = np.random.default_rng(seed)
    # 01:00 in Shanghai, a day or so ago: the world's local-day boundaries (features count
    # local days) then fall at the same hour whenever the suite runs, so the data, and what
    # a model learns from it, does not change with the time of day.
    end = (utcnow() - timedelta(days=1)).replace(hour=17, minute=0, second=0, microsecond=0)
    start = end - timedelta(days=DAYS)
    source, _ = create_source(SYSTEM, "CRM", "http")
    first_id = (db.session.scalar(sa.select(sa.func.max(Profile.id))) or 0) + 1
    profiles, events, identities = [], [], []
    for offset in range(n):
        pid = first_id + offset
        tier1 = rng.random() < 0.4
        joined = start + timedelta(days=float(rng.uniform(0, 120)))
        traits = {
            "city_tier": "一线" if tier1 else "三线",
            "gender": str(rng.choice(["female", "male"])),
        }
        traits["birth_date"] = (
            f"{rng.integers(1950, 2004)}-0{rng.integers(1, 10)}-1{rng.integers(0, 10)}"
        )
        # Reading comes in two regimes (the rate changes once); each read leads to a coupon
        # claim a few days later with a chance that is much higher in tier-1 cities.
        change = float(rng.uniform(0, DAYS))
        claim = (0.3 if tier1 else 0.02) if signal else 0.0
        for low, high in ((0.0, change), (change, float(DAYS))):
            rate = rng.gamma(0.8, 3.0) / 30
            for day in rng.uniform(low, high, rng.poisson(rate * (high - low))):
                ts = start + timedelta(days=float(day))
                if ts <= joined:
                    continue
                events.append(_event(source.id, pid, "article_read", ts, {"article_id": "A1"}))
                if rng.random() < claim:
                    later = min(ts + timedelta(days=float(rng.uniform(0, 5))), end)
                    events.append(_event(source.id, pid, TARGET, later, {"value_cny": 10}))
        if not signal and pid % 2 == 0:  # no signal beyond the target's own rhythm
            for day in np.arange(5.0, DAYS, 10.0):
                events.append(_event(source.id, pid, TARGET, start + timedelta(days=float(day))))
        if rng.random() < 0.5:  # a chronic buyer: 30-day packs, now and then late
            day = float(rng.uniform(0, 40))
            while day < DAYS:
                ts = start + timedelta(days=day)
                items = [{"drug_code": "D001", "rx": True, "days_of_supply": 30, "qty": 1}]
                events.append(
                    _event(source.id, pid, "pos_purchase", ts, {"items": items, "total_cny": 98.5})
                )
                day += 30 + float(rng.exponential(6))
        profiles.append(
            {
                "id": pid,
                "kind": "patient",
                "traits": traits,
                "first_seen_at": joined,
                "last_seen_at": end,
                "created_at": joined,
                "updated_at": joined,
            }
        )
        identities.append(
            {"profile_id": pid, "type": "user_id", "namespace": "", "value_index": f"u{pid}",
             "source_id": source.id, "created_at": joined}
        )  # fmt: skip
    db.session.execute(sa.insert(Profile.__table__), profiles)
    db.session.execute(sa.insert(Identity.__table__), identities)
    db.session.execute(sa.insert(Event.__table__), events)
    db.session.commit()
    ids = [p["id"] for p in profiles]
    consented = {pid for pid in ids if pid % 3 != 0}
    refused = {pid for pid in ids if pid % 17 == 0}
    for pid in sorted(consented):
        record_consent(SYSTEM, pid, "health_data", "*", "granted", at=start)
    for pid in sorted(refused):
        record_consent(SYSTEM, pid, "automated_marketing", "*", "withdrawn", at=start)
    db.session.commit()
    return World(end, source.id, ids, consented, refused)


@pytest.fixture
def world(app_ctx) -> World:
    return build_world()


def features_at(cutoff, target=None):
    found = compute_features(cutoff, "patient", target)
    return found.frame[found.numeric + found.categorical]


def test_features_ignore_every_future_event(world):
    """Shuffle, move, edit, delete and add events after the cutoff: nothing changes."""
    cutoff = world.cutoff(120)
    target = labels.Target(TARGET)
    before = features_at(cutoff, target)
    e = Event.__table__
    future = list(
        db.session.execute(sa.select(e.c.id, e.c.profile_id).where(e.c.timestamp >= cutoff))
    )
    assert len(future) > 100
    rng = np.random.default_rng(3)
    shuffled = rng.permutation([pid for _id, pid in future])
    for (event_id, _pid), new_pid in zip(future, shuffled, strict=True):
        db.session.execute(sa.update(e).where(e.c.id == event_id).values(profile_id=int(new_pid)))
    db.session.execute(
        sa.update(e)
        .where(e.c.timestamp >= cutoff, e.c.name == "pos_purchase")
        .values(properties={"items": [{"drug_code": "D001", "days_of_supply": 5}], "total_cny": 1})
    )
    db.session.execute(sa.delete(e).where(e.c.timestamp >= cutoff, e.c.name == "article_read"))
    extra = [
        _event(world.source_id, pid, TARGET, cutoff + timedelta(seconds=1))
        for pid in world.ids[:50]
    ]
    extra += [
        _event(world.source_id, pid, "pos_purchase", cutoff, {"total_cny": 5})
        for pid in world.ids[:50]
    ]
    db.session.execute(sa.insert(e), extra)
    db.session.commit()
    after = features_at(cutoff, target)
    pd.testing.assert_frame_equal(before, after)
    # ... while an event a second before the cutoff does count.
    db.session.execute(
        sa.insert(e), [_event(world.source_id, world.ids[1], TARGET, cutoff - timedelta(seconds=1))]
    )
    db.session.commit()
    changed = features_at(cutoff, target)
    assert changed.loc[world.ids[1], "target_30"] == before.loc[world.ids[1], "target_30"] + 1


def test_labels_are_the_target_in_the_half_open_window(world):
    cutoff = world.cutoff(120)
    end = cutoff + timedelta(days=60)
    e = Event.__table__
    a, b, c, d = world.ids[1], world.ids[2], world.ids[4], world.ids[5]
    db.session.execute(sa.delete(e).where(e.c.name == TARGET))
    rows = [
        _event(world.source_id, a, TARGET, cutoff),  # at the cutoff: not after it
        _event(world.source_id, b, TARGET, cutoff + timedelta(seconds=1)),
        _event(world.source_id, c, TARGET, end),  # the last instant counts
        _event(world.source_id, d, TARGET, end + timedelta(seconds=1)),
        _event(world.source_id, d, "article_read", cutoff + timedelta(days=1)),
    ]
    db.session.execute(sa.insert(e), rows)
    db.session.commit()
    assert labels.labelled(labels.Target(TARGET), cutoff, end).tolist() == [b, c]
    # Filters use the rule language: only targets worth more than 20 CNY.
    db.session.execute(sa.insert(e), [_event(world.source_id, a, TARGET, end, {"value_cny": 30})])
    db.session.commit()
    rich = labels.check_target(TARGET, [{"property": "value_cny", "op": "gt", "value": 20}])
    assert labels.labelled(rich, cutoff, end).tolist() == [a]


def test_health_features_only_with_consent_and_refusals_left_out(world):
    cutoff = world.cutoff(100)
    found = compute_features(cutoff, "patient")
    frame = found.frame
    assert not set(found.ids) & world.refused
    consented = frame.index.isin(list(world.consented))
    assert frame.loc[~consented, "purchases_365"].isna().all()
    assert frame.loc[~consented, "days_past_runout"].isna().all()
    assert frame.loc[consented, "purchases_365"].notna().all()
    assert frame.loc[consented, "purchases_365"].max() >= 10
    assert (frame["health_consent"] == consented.astype(np.float32)).all()
    # Refill adherence: 30-day packs bought every 30 + exp(6) days, so a few days late.
    late = frame.loc[consented, "refill_days_late_mean"].dropna()
    assert 2 < late.median() < 12
    # A health-data population is only the consented profiles.
    health = compute_features(cutoff, "patient", health_only=True)
    assert set(health.ids) <= world.consented


def test_features_of_one_profile_by_hand(world):
    """Counts per window, recency, tenure and age band for a profile written by hand."""
    cutoff = world.cutoff(100)
    e = Event.__table__
    pid = world.ids[1]
    db.session.execute(sa.delete(e).where(e.c.profile_id == pid))
    rows = [
        _event(world.source_id, pid, "article_read", cutoff - timedelta(days=d))
        for d in (1, 10, 50, 200, 400)
    ]
    rows.append(_event(world.source_id, pid, TARGET, cutoff - timedelta(days=45)))
    db.session.execute(sa.insert(e), rows)
    joined = cutoff - timedelta(days=500)
    db.session.execute(
        sa.update(Profile.__table__)
        .where(Profile.id == pid)
        .values(
            first_seen_at=joined,
            traits={"birth_date": "1970-05-01", "gender": "female", "city_tier": "一线"},
        )
    )
    db.session.commit()
    row = features_at(cutoff, labels.Target(TARGET)).loc[pid]
    assert (row["reads_30"], row["reads_90"], row["reads_365"]) == (2, 3, 4)
    assert (row["events_30"], row["events_90"], row["events_365"]) == (2, 4, 5)
    assert row["days_since_last_event"] == pytest.approx(1, abs=1e-3)
    assert (row["target_30"], row["target_90"], row["target_days_since_last"]) == (
        0,
        1,
        pytest.approx(45, abs=1e-3),
    )
    assert row["tenure_days"] == pytest.approx(500, abs=1e-3)
    assert row["age_band"] == "45-59" and row["city_tier"] == "一线"
    assert row["purchases_365"] == 0  # consented (id % 3 != 0), bought nothing in the window


def test_purchase_lines_by_hand(world):
    """Supply and Rx of one- and several-line purchases; a longer supply counts as ten years."""
    cutoff = world.cutoff(100)
    e = Event.__table__
    pid = world.ids[1]  # consented
    db.session.execute(sa.delete(e).where(e.c.profile_id == pid))
    purchases = [
        (100, [{"days_of_supply": 10, "rx": False}, {"days_of_supply": 30, "rx": True}], 50),
        (60, [{"days_of_supply": 20}], 20),
        (10, [{"days_of_supply": 5000, "rx": True}], "12"),  # a total that is no number
    ]
    db.session.execute(
        sa.insert(e),
        [
            _event(world.source_id, pid, "pos_purchase", cutoff - timedelta(days=d),
                   {"items": items, "total_cny": total})
            for d, items, total in purchases
        ],
    )  # fmt: skip
    db.session.commit()
    row = features_at(cutoff).loc[pid]
    assert (row["purchases_365"], row["spend_365"], row["rx_purchases_365"]) == (3, 70, 2)
    assert row["purchase_interval_mean"] == pytest.approx(45, abs=1e-3)
    # Late against the longest line: 40 - 30 and 50 - 20 days.
    assert row["refill_days_late_mean"] == pytest.approx(20, abs=1e-3)
    assert row["days_past_runout"] == pytest.approx(10 - 3650, abs=1e-3)
