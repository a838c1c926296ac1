"""Propensity models: train time, scoring time and peak memory at scale.

    .venv/bin/python bench/propensity_bench.py [--profiles 200000] [--events 5000000]
        [--score-profiles 1000000] [--algorithm hgb] [--sqlite PATH] [--reuse]
    CDP_INSTANCE_PATH=DIR .venv/bin/python bench/propensity_bench.py --phase score --sqlite PATH
        (scoring only, on data and a model already there; DIR holds the model artifact)

1. Generates ``--profiles`` patients with ``--events`` events over 400 days (reads, page
   views, clicks, coupon claims, pharmacy and online purchases with days of supply, refill
   reminders), written straight to SQLite with numpy and executemany (the demo generator
   would take half an hour); 60 % give the health-data consent. Coupon claims depend on a
   hidden propensity that also drives reading, so there is something to learn.
2. Trains "coupon_60d" (target ``coupon_claimed``, horizon 60 days, cutoff 70 days before
   the end) in a child process: features of both snapshots, fit, evaluation, artifact.
3. Adds light profiles (5 events each) up to ``--score-profiles`` and scores all of them in
   a child process: features as of now, predict in chunks, ranks, bulk write of the scores.

Each phase runs in its own process, so its peak memory (max RSS) is its own; it reports its
CPU seconds and the load average beside the wall time (per stage for scoring). Targets
(issue 7): train <= 2 min, score 1,000,000 profiles <= 60 s, memory < 4 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import orjson  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from flask_migrate import upgrade  # noqa: E402

from cdp import create_app  # noqa: E402
from cdp.actors import SYSTEM  # noqa: E402
from cdp.db import db, utcnow  # noqa: E402
from cdp.models import ConsentRecord, ConsentState, Event, Profile  # noqa: E402
from cdp.seed.demo import ensure_demo_sources  # noqa: E402

DAYS = 400
# (event name, channel, share of a profile's events at average propensity)
MIX = [
    ("article_read", "wechat", 0.38), ("page_view", "miniprogram", 0.2),
    ("template_click", "wechat", 0.08), ("coupon_claimed", "miniprogram", 0.05),
    ("pos_purchase", "pos", 0.17), ("order_completed", "ecommerce", 0.07),
    ("refill_reminder_open", "miniprogram", 0.05),
]  # fmt: skip
CITY_TIERS = ["一线", "新一线", "二线", "三线"]
INSERT = "INSERT INTO events (source_id, message_id, profile_id, type, name, timestamp, received_at, properties, context) VALUES (?, ?, ?, 'track', ?, ?, ?, ?, '{}')"
PROFILE = "INSERT INTO profiles (id, kind, traits, trait_times, first_seen_at, last_seen_at, created_at, updated_at) VALUES (?, 'patient', ?, '{}', ?, ?, ?, ?)"


def _purchase_properties() -> list[str]:
    found = []
    for code, supply, price in (("D001", 30, 98.5), ("D008", 30, 28.9), ("D003", 28, 62.3),
                                ("D018", 4, 16.9), ("D021", 60, 39.0)):  # fmt: skip
        items = [{"drug_code": code, "rx": supply >= 28, "qty": 1, "days_of_supply": supply,
                  "price": price}]  # fmt: skip
        found.append(orjson.dumps({"items": items, "total_cny": price}).decode())
    return found


def _text(stamps: np.ndarray) -> list[str]:
    """datetime64[us] (UTC) as SQLite's stored text, 'YYYY-MM-DD HH:MM:SS.ffffff'."""
    return np.char.replace(np.datetime_as_string(stamps, unit="us"), "T", " ").tolist()


def generate(first_id: int, profiles: int, events: int, seed: int, end) -> int:
    """Insert ``profiles`` patients and about ``events`` events; returns events written."""
    rng = np.random.default_rng(seed)
    sources, _ = ensure_demo_sources(SYSTEM)
    ids = np.arange(first_id, first_id + profiles)
    latent = rng.normal(0, 1, profiles)
    tier = rng.integers(0, len(CITY_TIERS), profiles)
    end64 = np.datetime64(end.replace(tzinfo=None), "us")
    start64 = end64 - np.timedelta64(DAYS, "D")
    joined = start64 + (rng.uniform(0, 0.3, profiles) * DAYS * 86400e6).astype("timedelta64[us]")
    births = [f"{y}-0{m}-1{d}" for y, m, d in zip(rng.integers(1940, 2005, profiles),
              rng.integers(1, 10, profiles), rng.integers(0, 10, profiles), strict=True)]  # fmt: skip
    traits = [orjson.dumps({"birth_date": b, "gender": "female" if g else "male", "city_tier": CITY_TIERS[t]}).decode()
              for b, g, t in zip(births, rng.random(profiles) < 0.52, tier, strict=True)]  # fmt: skip
    joined_text, end_text = _text(joined), str(end64).replace("T", " ")
    connection = db.engine.raw_connection()
    cursor = connection.cursor()
    cursor.executemany(PROFILE, zip(ids.tolist(), traits, joined_text, [end_text] * profiles,
                                    joined_text, joined_text, strict=True))  # fmt: skip
    per_profile = events / profiles
    written, serial = 0, first_id * 1000
    purchases = _purchase_properties()
    for name, channel, share in MIX:
        boost = {"coupon_claimed": 1.2, "article_read": 0.5}.get(name, 0.0)
        tier_factor = np.where(tier == 0, 1.6, 0.8) if name == "coupon_claimed" else 1.0
        rate = share * per_profile * np.exp(boost * latent - boost**2 / 2) * tier_factor
        counts = rng.poisson(rate)
        owners = np.repeat(np.arange(profiles), counts)
        span = (end64 - joined[owners]).astype(np.int64)
        stamps = joined[owners] + (rng.random(len(owners)) * span).astype("timedelta64[us]")
        if name in ("pos_purchase", "order_completed"):
            props = [purchases[i] for i in rng.integers(0, len(purchases), len(owners))]
        else:
            props = ["{}"] * len(owners)
        text = _text(stamps)
        messages = [f"b{serial + i}" for i in range(len(owners))]
        serial += len(owners)
        for lo in range(0, len(owners), 200_000):
            hi = lo + 200_000
            cursor.executemany(INSERT, zip([sources[channel]] * len(owners[lo:hi]), messages[lo:hi],
                               ids[owners[lo:hi]].tolist(), [name] * len(owners[lo:hi]),
                               text[lo:hi], text[lo:hi], props[lo:hi], strict=True))  # fmt: skip
        written += len(owners)
    connection.commit()
    connection.close()
    return written


def grant_health_consent(first_id: int) -> None:
    """60 % of the new patients gave the separate health-data consent (PIPL), in bulk."""
    moment = utcnow() - timedelta(days=DAYS + 10)
    consenting = sa.select(
        Profile.id, sa.literal("health_data"), sa.literal("*"), sa.literal("granted"),
        sa.literal(moment, ConsentRecord.recorded_at.type), sa.literal({}, ConsentRecord.evidence.type),
    ).where(Profile.id >= first_id, Profile.id % 5 < 3)  # fmt: skip
    columns = ["profile_id", "purpose", "channel", "status", "recorded_at", "evidence"]
    db.session.execute(sa.insert(ConsentRecord).from_select(columns, consenting))
    records = sa.select(
        ConsentRecord.profile_id, ConsentRecord.purpose, ConsentRecord.channel,
        ConsentRecord.status, ConsentRecord.recorded_at, ConsentRecord.id,
    ).where(ConsentRecord.profile_id >= first_id)  # fmt: skip
    columns = ["profile_id", "purpose", "channel", "status", "updated_at", "record_id"]
    db.session.execute(sa.insert(ConsentState).from_select(columns, records))
    db.session.commit()


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def app_for(path: str):
    return create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{path}", "SECRET_KEY": "bench",
                       "PII_KEY": "bench-pii"})  # fmt: skip


def phase(args) -> dict:
    """One measured step, in this (child) process; prints its result as JSON."""
    from segments.propensity import service

    with app_for(args.sqlite).app_context():
        load = os.getloadavg()[0]
        started, cpu = time.perf_counter(), time.process_time()
        if args.phase == "train":
            end = db.session.scalar(sa.select(sa.func.max(Event.timestamp)))
            cutoff = (end - timedelta(days=70)).date().isoformat()
            spec = service.make_spec("coupon_60d", "coupon_claimed", "60d", cutoff,
                                     algorithm=args.algorithm)  # fmt: skip
            version = service.train_model(SYSTEM, spec, activate=True)
            result = {"version": version.version, "data_size": version.data_size,
                      "model": version.metrics["model"], "baseline": version.metrics["baseline"]}  # fmt: skip
        else:
            marks = []

            def mark(message: str) -> None:
                marks.append((time.perf_counter() - started, time.process_time() - cpu, message))

            scored = service.score_model(SYSTEM, "coupon_60d", progress=lambda _d, _t, m: mark(m))
            mark("stored")
            result = {"profiles": len(scored.frame), "stages": _stages(marks)}
        # CPU seconds and the load average beside the wall time: the machine is shared, and
        # the wall time of the same work varies twofold with what else runs.
        result.update(seconds=round(time.perf_counter() - started, 1),
                      cpu_seconds=round(time.process_time() - cpu, 1), peak_mb=round(peak_mb()),
                      load=[round(load, 1), round(os.getloadavg()[0], 1)])  # fmt: skip
    print("RESULT " + json.dumps(result, ensure_ascii=False))
    return result


def _stages(marks: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """Wall and CPU seconds spent in each step, named by the progress message that ends it
    (the prediction chunks as one step)."""
    chunks = [m for m in marks if m[2].startswith("scored ")]
    kept = [m for m in marks if not m[2].startswith("scored ") or m is chunks[-1]]
    wall, cpu, out = 0.0, 0.0, []
    for at, used, message in kept:
        out.append((round(at - wall, 1), round(used - cpu, 1), message))
        wall, cpu = at, used
    return out


def run_phase(args, name: str) -> dict:
    command = [sys.executable, __file__, "--phase", name, "--sqlite", args.sqlite,
               "--algorithm", args.algorithm]  # fmt: skip
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.split("RESULT ", 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profiles", type=int, default=200_000)
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--score-profiles", type=int, default=1_000_000)
    parser.add_argument("--algorithm", default="hgb", choices=["hgb", "logistic"])
    parser.add_argument("--sqlite", help="SQLite file (default: a temporary one)")
    parser.add_argument("--reuse", action="store_true", help="use the data already there")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--phase", choices=["train", "score"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("CDP_INSTANCE_PATH", tempfile.mkdtemp(prefix="cdp-prop-bench-"))
    args.sqlite = args.sqlite or str(Path(tempfile.mkdtemp(prefix="cdp-prop-bench-")) / "bench.db")
    if args.phase:
        phase(args)
        return
    end = utcnow().replace(microsecond=0) - timedelta(hours=1)
    with app_for(args.sqlite).app_context():
        upgrade()
        if not (args.reuse and db.session.scalar(sa.select(Profile.id).limit(1))):
            started = time.perf_counter()
            written = generate(1, args.profiles, args.events, args.seed, end)
            grant_health_consent(1)
            print(f"generated {args.profiles:,} profiles, {written:,} events "
                  f"in {time.perf_counter() - started:.0f} s")  # fmt: skip
    train = run_phase(args, "train")
    size = train["data_size"]
    print(f"train ({args.algorithm}): {train['seconds']} s ({train['cpu_seconds']} s CPU), "
          f"peak {train['peak_mb']:,} MB, load average {train['load']}; "
          f"{size['train_rows']:,} + {size['validation_rows']:,} profiles, "
          f"{size['events_read']:,} events read; ROC AUC {train['model']['roc_auc']} "
          f"(baseline {train['baseline']['roc_auc']})")  # fmt: skip
    with app_for(args.sqlite).app_context():
        have = db.session.scalar(sa.select(sa.func.count()).select_from(Profile))
        if have < args.score_profiles:
            started = time.perf_counter()
            written = generate(have + 1, args.score_profiles - have,
                               (args.score_profiles - have) * 5, args.seed + 1, end)  # fmt: skip
            grant_health_consent(have + 1)
            print(f"added {args.score_profiles - have:,} light profiles, {written:,} events "
                  f"in {time.perf_counter() - started:.0f} s")  # fmt: skip
        events = db.session.scalar(sa.select(sa.func.max(Event.id)))
    score = run_phase(args, "score")
    print(f"score: {score['profiles']:,} profiles ({events:,} events in the database) in "
          f"{score['seconds']} s ({score['cpu_seconds']} s CPU), peak {score['peak_mb']:,} MB, "
          f"load average {score['load']}; stages (wall s, CPU s) {score['stages']}")  # fmt: skip


if __name__ == "__main__":
    main()
