"""Point-in-time features: one row per eligible profile, from events strictly before the cutoff.

The database narrows and codes the rows (event group, channel, time as epoch seconds); numpy
and pandas aggregate them with bincount/groupby, never a Python loop per profile. Features:

- recency, frequency per event group and per channel over 30/90/365 days, active days,
  tenure, quiz scores, reach (identifiers and marketing consent as of the cutoff), traits
  (gender, age band at the cutoff, city tier; department and title for doctors);
- the target event's own history (counts per window, days since the last one);
- health data (medicine purchases: counts and spend per window and channel, Rx purchases,
  inter-purchase intervals, refill adherence as days late against the predicted run-out,
  refill reminders opened): only for profiles with a current ``health_data`` consent, NaN
  for everyone else (PIPL), whatever the model.

Eligible: live profiles of the kind, first seen before the cutoff, who have not refused
automated marketing (PIPL Art. 24); with ``health_only``, only those with health consent.
Traits are today's values: the platform keeps no trait history.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import sqlalchemy as sa

from cdp.consent import granted_profiles, refused_profiles
from cdp.db import db
from cdp.models import ConsentRecord, Event, Identity, Profile, Source
from segments.conditions.events import HEALTH_EVENTS
from segments.propensity import labels
from segments.propensity.common import (
    DAY,
    Progress,
    RowIndex,
    dialect,
    epoch_seconds,
    fetch,
    fetch_rows,
)
from segments.propensity.purchases import (
    LOOKBACK,
    NEVER,
    PURCHASES,
    WINDOWS,
    channel_code,
    purchase_columns,
    purchase_features,
)
from segments.sqljson import SqlJson, no_index

EVENTS = Event.__table__
LOCAL_OFFSET = 8 * 3600  # Asia/Shanghai has no DST: local days for "active days"
GROUPS = {
    "reads": ("article_read",),
    "clicks": ("template_click", "menu_click", "qr_scan"),
    "views": ("page_view", "menu_view"),
    "coupons": ("coupon_claimed",),
    "meetings": ("meeting_attended",),
    "quizzes": ("quiz_answered", "quiz_completed"),
    "messages": ("message_received",),
}
REMINDERS = ("refill_reminder_open",)
PURCHASE, REMINDER, OTHER_HEALTH = 8, 9, 10  # event codes from 8 up are health data
CODES = 11  # 0 (other), the groups 1-7, then the health codes
INTERNAL_PURCHASE = 15  # a purchase from an internal source: read for purchases only
CHANNEL_NAMES = {1: "wechat", 2: "miniprogram", 3: "pos", 4: "ecommerce", 0: "other"}
SCAN_SHARE = 0.3  # share of all events in the window above which SQLite scans the table
REACH_IDS = {"wechat_openid": 0, "miniprogram_openid": 1, "phone": 2}
REACH_CHANNELS = {"wechat": 0, "miniprogram": 1, "sms": 2, "*": 3}
AGE_BANDS = ([0, 30, 45, 60, 75, 200], ["<30", "30-44", "45-59", "60-74", "75+"])
TRAITS = {"patient": ("gender", "city_tier"), "hcp": ("gender", "city_tier", "department", "title")}
CATEGORICAL = {kind: (*traits, "age_band") for kind, traits in TRAITS.items()}


def _general_names() -> list[str]:
    names = [f"events_{w}" for w in WINDOWS]
    names += ["days_since_last_event", "days_since_last_engagement", "active_days_90"]
    names += [f"{group}_{w}" for group in GROUPS for w in WINDOWS]
    names += [f"{ch}_events_{w}" for ch in CHANNEL_NAMES.values() for w in (90, 365)]
    names += ["quiz_score_mean", "tenure_days", "age"]
    names += [f"has_{name}" for name in REACH_IDS]
    names += [f"marketing_{ch}" for ch in list(REACH_CHANNELS)[:3]]
    return [*names, "health_consent"]


def _health_names() -> list[str]:
    names = [f"purchases_{w}" for w in WINDOWS] + [f"spend_{w}" for w in WINDOWS]
    names += [f"{ch}_{m}_{w}" for ch in ("pos", "ecommerce") for m in ("purchases", "spend")
              for w in (90, 365)]  # fmt: skip
    names += ["rx_purchases_365", "days_since_last_purchase", "purchase_interval_mean"]
    names += ["purchase_interval_std", "refill_days_late_mean", "days_past_runout"]
    return names + ["reminder_opens_90", "reminder_opens_365", "other_health_365"]


GENERAL, HEALTH = _general_names(), _health_names()
TARGET = [f"target_{w}" for w in WINDOWS] + ["target_days_since_last"]


def numeric_columns(with_target: bool = True) -> list[str]:
    return GENERAL + HEALTH + (TARGET if with_target else [])


@dataclass
class FeatureSet:
    cutoff: datetime
    ids: np.ndarray  # profile ids, sorted
    frame: pd.DataFrame  # one row per id, in the same order
    numeric: list[str]
    categorical: list[str]
    consented: np.ndarray  # health-data consent, per row
    events: int = 0  # event rows read

    def __len__(self) -> int:
        return len(self.ids)


def population(kind: str, cutoff: datetime, health_only: bool = False):
    """SELECT of the eligible profile ids at the cutoff."""
    query = sa.select(Profile.id).where(
        Profile.merged_into_id.is_(None),
        Profile.kind == kind,
        Profile.first_seen_at < cutoff,
        Profile.id.not_in(refused_profiles("automated_marketing")),
    )
    if health_only:
        query = query.where(Profile.id.in_(granted_profiles("health_data")))
    return query


def _event_code(name):
    """The event's group number (0: other), health data >= PURCHASE; one comparison per
    known name (CASE name WHEN ...), the prefix test only for names not listed."""
    codes = {n: code for code, names in enumerate(GROUPS.values(), start=1) for n in names}
    codes.update(dict.fromkeys(PURCHASES, PURCHASE))
    codes.update(dict.fromkeys(REMINDERS, REMINDER))
    codes.update(dict.fromkeys(sorted(HEALTH_EVENTS - set(codes)), OTHER_HEALTH))
    prefix = sa.case((name.like("order\\_%", escape="\\"), OTHER_HEALTH), else_=0)
    return sa.case(codes, value=name, else_=prefix)


def _scan(column, since: datetime):
    """The timestamp column to filter on. SQLite: when the window holds most events, read
    the table in order (``+column``) rather than row by row through the time index, which
    is several times slower for a large share of the table."""
    if dialect() != "sqlite":
        return column
    total = db.session.scalar(sa.select(sa.func.max(EVENTS.c.id))) or 0
    recent = db.session.scalar(sa.select(sa.func.count()).where(EVENTS.c.timestamp >= since))
    return no_index(column) if total and recent / total > SCAN_SHARE else column


def compute_features(
    cutoff: datetime,
    kind: str = "patient",
    target: labels.Target | None = None,
    health_only: bool = False,
    progress: Progress | None = None,
) -> FeatureSet:
    """Features of every eligible profile as of ``cutoff`` (events strictly before it)."""

    def step(message: str) -> None:
        if progress is not None:
            progress(0, 0, message)

    people = _profiles(kind, cutoff, health_only)
    ids = people.index.to_numpy(dtype=np.int64)
    index = RowIndex(ids)
    consented = np.isin(ids, fetch(granted_profiles("health_data"), 1)[:, 0].astype(np.int64))
    cols: dict[str, np.ndarray] = {}
    step(f"{len(ids):,} eligible profiles; reading events")
    events, purchases = _event_features(index, cutoff, consented, cols)
    step(f"{events:,} events read")
    cols.update(purchase_features(index, cutoff, consented, purchases))
    _reach_features(index, cutoff, cols)
    cols["health_consent"] = consented.astype(np.float64)
    cols["tenure_days"] = np.maximum(
        (cutoff.timestamp() - people["first_seen"].to_numpy()) / DAY, 0
    )
    categories = _traits(people, cutoff, kind, cols)
    # One float32 block filled column by column: pandas would copy a dict of arrays again
    # to consolidate them.
    values = np.empty((len(ids), len(GENERAL + HEALTH)), np.float32, order="F")
    for number, name in enumerate(GENERAL + HEALTH):
        values[:, number] = cols[name]
    frame = pd.DataFrame(values, columns=GENERAL + HEALTH, copy=False)
    if target is not None:
        frame = frame.assign(**_target_features(index, cutoff, target))
    for name, values in categories.items():
        frame[name] = values
    frame.index = pd.Index(ids, name="profile_id")
    numeric = numeric_columns(target is not None)
    step(f"{frame.shape[1]} features of {len(ids):,} profiles")
    return FeatureSet(cutoff, ids, frame, numeric, list(CATEGORICAL[kind]), consented, events)


def _event_features(index: RowIndex, cutoff: datetime, consented, cols) -> tuple[int, tuple]:
    """Event counts, channels and recency into ``cols``; returns the number of events read
    and the purchases (rows, channel, stamp, total, lines) for ``purchase_features``."""
    e, name = EVENTS, EVENTS.c.name
    sources = db.session.execute(sa.select(Source.id, Source.kind)).all()
    internal = [sid for sid, kind in sources if kind in labels.INTERNAL_KINDS]
    since = cutoff - timedelta(days=LOOKBACK)
    ts = _scan(e.c.timestamp, since)
    code = _event_code(name)
    is_purchase = name.in_(PURCHASES)
    # Derived events of internal sources are never activity; purchases count whatever
    # their source, so those rows are read too, with their own code.
    if internal:
        code = sa.case((e.c.source_id.in_(internal), INTERNAL_PURCHASE), else_=code)
    # Few numbers per event (profile, code and channel packed in one): the transfer of
    # values from the driver costs more than the scan itself. Purchase details come in the
    # same pass (0 for other events).
    packed = e.c.profile_id * 128 + code * 8 + channel_code(sources)
    total, lines = purchase_columns()
    query = sa.select(
        packed,
        epoch_seconds(e.c.timestamp, dialect()),
        sa.case((is_purchase, total), else_=0),
        sa.case((is_purchase, lines), else_=0),
    ).where(e.c.profile_id.is_not(None), ts >= since, ts < cutoff)
    if internal:
        query = query.where(sa.or_(e.c.source_id.not_in(internal), is_purchase))
    data = fetch(query, 4)
    packed_values = data[:, 0].astype(np.int64)
    rows, found = index.rows(packed_values >> 7)
    code, channel = (packed_values[found] >> 3) & 15, packed_values[found] & 7
    data = data[found]
    del packed_values
    bought = (code == PURCHASE) | (code == INTERNAL_PURCHASE)
    purchases = (rows[bought], channel[bought], data[bought, 1], data[bought, 2], data[bought, 3])
    stamp = data[:, 1]
    del data
    # Health events of profiles without health-data consent are dropped before anything is
    # derived from them (PIPL), as segments do: they count for nothing.
    keep = ((code < PURCHASE) | consented[rows]) & (code != INTERNAL_PURCHASE)
    rows, code, channel, stamp = rows[keep], code[keep], channel[keep], stamp[keep]
    age = (cutoff.timestamp() - stamp) / DAY
    bucket = (age >= WINDOWS[0]).astype(np.int64) + (age >= WINDOWS[1])  # 0: < 30 d, 1, 2
    # One bincount per table, then running sums over the nested windows (30 ⊂ 90 ⊂ 365).
    by_code = _running(index.table(rows * (CODES * 3) + code * 3 + bucket, (CODES, 3)))
    general = code < PURCHASE
    by_channel = _running(
        index.table(rows[general] * 15 + channel[general] * 3 + bucket[general], (5, 3))
    )
    for i, w in enumerate(WINDOWS):
        cols[f"events_{w}"] = by_code[:, :PURCHASE, i].sum(axis=1)
        for number, group in enumerate(GROUPS, start=1):
            cols[f"{group}_{w}"] = by_code[:, number, i]
    for number, channel_name in CHANNEL_NAMES.items():
        cols[f"{channel_name}_events_90"] = by_channel[:, number, 1]
        cols[f"{channel_name}_events_365"] = by_channel[:, number, 2]
    for column, number, i in (("reminder_opens_90", REMINDER, 1),
                              ("reminder_opens_365", REMINDER, 2),
                              ("other_health_365", OTHER_HEALTH, 2)):  # fmt: skip
        cols[column] = np.where(consented, by_code[:, number, i], np.nan)
    cols["days_since_last_event"] = index.minimum(rows[general], age[general], NEVER)
    engaged = general & (code > 0)
    cols["days_since_last_engagement"] = index.minimum(rows[engaged], age[engaged], NEVER)
    recent = general & (bucket < 2)
    cols["active_days_90"] = _active_days(index, rows[recent], stamp[recent])
    cols["quiz_score_mean"] = _quiz_scores(index, cutoff)
    return int(len(rows)), purchases


def _running(table: np.ndarray) -> np.ndarray:
    """Running sums over the last axis, in place: a slice addition per window is several
    times faster than cumsum along a short, strided axis."""
    for i in range(1, table.shape[-1]):
        table[..., i] += table[..., i - 1]
    return table


def _active_days(index: RowIndex, rows: np.ndarray, stamp: np.ndarray) -> np.ndarray:
    """Distinct local days with an event, per row: a profile x day bitmap (about 90 bytes
    per profile) is several times faster than np.unique over the pairs."""
    if not len(rows):
        return np.zeros(index.n)
    days = np.floor((stamp + LOCAL_OFFSET) / DAY).astype(np.int64)
    first = days.min()
    seen = np.zeros((index.n, int(days.max() - first) + 1), bool)
    seen[rows, days - first] = True
    return seen.sum(axis=1).astype(np.float64)


def _quiz_scores(index: RowIndex, cutoff: datetime) -> np.ndarray:
    e = EVENTS
    score = SqlJson(dialect()).json_num(e.c.properties, ("score",))
    query = (
        sa.select(e.c.profile_id, sa.func.avg(score))
        .where(
            e.c.name.in_(GROUPS["quizzes"]),
            e.c.timestamp >= cutoff - timedelta(days=LOOKBACK),
            e.c.timestamp < cutoff,
            score.is_not(None),
        )
        .group_by(e.c.profile_id)
    )
    data = fetch(query, 2)
    rows, found = index.rows(data[:, 0].astype(np.int64))
    out = np.full(index.n, np.nan)
    out[rows] = data[found, 1]
    return out


def _reach_features(index: RowIndex, cutoff: datetime, cols) -> None:
    """Identifiers held and marketing consent per channel, both as of the cutoff."""
    i = Identity.__table__
    idents = fetch(
        sa.select(i.c.profile_id, sa.case(REACH_IDS, value=i.c.type)).where(
            i.c.type.in_(list(REACH_IDS)), i.c.created_at < cutoff
        ),
        2,
    )
    rows, found = index.rows(idents[:, 0].astype(np.int64))
    kinds = idents[found, 1]
    for name, number in REACH_IDS.items():
        cols[f"has_{name}"] = np.minimum(index.count(rows, kinds == number), 1.0)
    c = ConsentRecord.__table__
    records = fetch(
        sa.select(
            c.c.profile_id,
            sa.case(REACH_CHANNELS, value=c.c.channel),
            sa.case((c.c.status == "granted", 1), else_=0),
            epoch_seconds(c.c.recorded_at, dialect()),
            c.c.id,
        ).where(
            c.c.purpose == "marketing",
            c.c.channel.in_(list(REACH_CHANNELS)),
            c.c.recorded_at < cutoff,
        ),
        5,
    )
    state = np.full((index.n, len(REACH_CHANNELS)), -1.0)  # -1 none, 0 withdrawn, 1 granted
    if len(records):
        latest = (
            pd.DataFrame(records, columns=["pid", "channel", "granted", "at", "id"])
            .sort_values(["at", "id"])
            .drop_duplicates(["pid", "channel"], keep="last")
        )
        rows, found = index.rows(latest["pid"].to_numpy().astype(np.int64))
        state[rows, latest["channel"].to_numpy()[found].astype(int)] = latest["granted"].to_numpy()[
            found
        ]
    star = state[:, REACH_CHANNELS["*"]]
    for name in ("wechat", "miniprogram", "sms"):
        own = state[:, REACH_CHANNELS[name]]
        reach = ((own == 1) | (star == 1)) & (own != 0) & (star != 0)
        cols[f"marketing_{name}"] = reach.astype(np.float64)


def _target_features(index: RowIndex, cutoff: datetime, target: labels.Target) -> dict:
    data = labels.history(target, cutoff, WINDOWS)
    rows, found = index.rows(data[:, 0].astype(np.int64))
    out = {}
    for number, w in enumerate(WINDOWS, start=1):
        values = np.zeros(index.n, np.float32)
        values[rows] = data[found, number]
        out[f"target_{w}"] = values
    last = np.full(index.n, NEVER, np.float32)
    last[rows] = (cutoff.timestamp() - data[found, -1]) / DAY
    out["target_days_since_last"] = last
    return out


def _profiles(kind: str, cutoff: datetime, health_only: bool) -> pd.DataFrame:
    """The eligible profiles (index: id, ascending) with first-seen time and raw traits."""
    sql, p = SqlJson(dialect()), Profile.__table__
    names = ("birth_date", *TRAITS[kind])
    query = population(kind, cutoff, health_only).add_columns(
        epoch_seconds(p.c.first_seen_at, dialect()),
        *(sql.json_text(p.c.traits, (name,)) for name in names),
    )
    rows = fetch_rows(query.order_by(p.c.id))
    table = pd.DataFrame.from_records(rows, columns=["id", "first_seen", *names])
    return table.set_index("id")


def _traits(people: pd.DataFrame, cutoff: datetime, kind: str, cols: dict) -> dict:
    """Categorical traits and the age band at the cutoff (unknown where a trait is missing)."""
    text = people["birth_date"].astype("string").str.slice(0, 10)
    born = pd.to_datetime(text, format="%Y-%m-%d", errors="coerce")
    age = ((pd.Timestamp(cutoff.date()) - born).dt.days / 365.25).to_numpy(np.float64)
    cols["age"] = age
    band = pd.cut(age, bins=AGE_BANDS[0], labels=AGE_BANDS[1], right=False)
    out = {"age_band": np.asarray(pd.Series(band).astype("object").fillna("unknown"))}
    for name in TRAITS[kind]:
        values = people[name].astype("string")
        valid = values.str.len().between(1, 40).fillna(False).astype(bool)
        out[name] = np.asarray(values.where(valid, "unknown").fillna("unknown").astype("object"))
    return out
