"""Advancing instances: each batch runs its due instances step by step until they wait or end.

One transaction per batch. Work that needs the database per step (branch conditions, the
events a wait_for_event or an exit waits for, frequency caps) is asked once per round for
all instances at such steps, not once per instance. Side effects are only written to the
delivery outbox here, in the same transaction as the step change; ``delivery.perform``
carries them out afterwards, so a crash can neither lose nor repeat them.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from cdp.consent import refused_profiles
from cdp.db import db, lock_for_writing, utcnow
from cdp.models import ConsentState, Event, Profile
from cdp.models.content import ContentVersion
from journeys.definition import EFFECT_STEPS, parse_duration, where_matches
from journeys.engine.plans import Plan, plans_for_versions
from journeys.engine.timing import quiet_until, quiet_window, wait_target
from journeys.engine.triggers import carries_key
from journeys.models import Delivery, JourneyInstance, JourneyStepLog
from journeys.settings import setting
from segments.compiler import compile_query
from segments.membership import make_context

I = JourneyInstance.__table__  # noqa: E741
MAX_ROUNDS = 50  # steps one instance may take in one run (cycles always hold a wait)
PAUSED_RETRY = timedelta(minutes=1)
COUNTED = ("pending", "sending", "sent", "delivered")  # what a frequency cap counts


@dataclass
class Run:
    """An instance being advanced, and what happened to it in this batch."""

    row: dict
    plan: Plan
    traits: dict
    log: list[tuple[str, str]] = field(default_factory=list)
    settled: bool = False  # waiting or ended: nothing more this run

    def __getattr__(self, name):
        try:
            return self.__dict__["row"][name]
        except KeyError:
            raise AttributeError(name) from None


@dataclass
class Batch:
    now: datetime
    runs: list[Run]
    deliveries: list[dict] = field(default_factory=list)
    sends: dict[tuple[int, str], list[datetime]] = field(default_factory=dict)
    versions: dict[int, ContentVersion] = field(default_factory=dict)


def _load(instance_ids: list[int], now: datetime) -> list[dict]:
    query = sa.select(I).where(
        I.c.id.in_(instance_ids),
        I.c.state.in_(("active", "waiting")),
        I.c.next_run_at <= now,
    )
    if db.session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return [dict(row._mapping) for row in db.session.execute(query)]


def advance(instance_ids: list[int], now: datetime | None = None) -> dict:
    """Advance the given instances that are due; returns counts. Safe to run twice."""
    now = now or utcnow()
    session = db.session
    lock_for_writing(session, wait_ms=30_000)
    rows = _load(instance_ids, now)
    plans = plans_for_versions({row["version_id"] for row in rows})
    traits = dict(
        session.execute(
            sa.select(Profile.id, Profile.traits).where(
                Profile.id.in_({row["profile_id"] for row in rows})
            )
        ).all()
    )
    runs, paused = [], []
    for row in rows:
        plan = plans[row["version_id"]]
        if plan.status != "published":
            paused.append(row["id"])
            continue
        runs.append(Run(row, plan, traits.get(row["profile_id"]) or {}))
    batch = Batch(now, runs)
    _check_exits(batch)
    for _ in range(MAX_ROUNDS):
        active = [run for run in runs if not run.settled]
        if not active:
            break
        _step_round(batch, active)
    for run in runs:
        if not run.settled:  # a very long chain of instant steps: go on next sweep
            run.row.update(state="active", next_run_at=now + timedelta(seconds=1))
    delivery_ids = _write(batch, paused)
    session.commit()
    return {"advanced": len(runs), "paused": len(paused), "delivery_ids": delivery_ids}


# --- steps ------------------------------------------------------------------------------------


def _arrive(run: Run, step_id: str | None, outcome: str, now: datetime) -> None:
    """Leave the current step with ``outcome`` and arrive at ``step_id`` (None: the end)."""
    run.log.append((run.step_id, outcome))
    if step_id is None:
        _end(run, "completed", None, now)
        return
    visits = dict(run.visits or {})
    visits[step_id] = visits.get(step_id, 0) + 1
    run.row.update(step_id=step_id, visits=visits, step_entered_at=now, waiting_event=None)
    run.log.append((step_id, "entered"))


def _end(run: Run, state: str, reason: str | None, now: datetime, **extra) -> None:
    run.row.update(state=state, exit_reason=reason, ended_at=now, next_run_at=None, **extra)
    run.row.update(waiting_event=None)
    run.settled = True


def _wait(run: Run, until: datetime, waiting_event: str | None = None) -> None:
    run.row.update(state="waiting", next_run_at=until, waiting_event=waiting_event)
    run.settled = True


def _check_refusals(batch: Batch) -> None:
    """PIPL Art. 24: who refused automated marketing leaves every marketing journey."""
    runs = [run for run in batch.runs if run.plan.marketing and not run.settled]
    if not runs:
        return
    refused = set(
        db.session.scalars(
            refused_profiles("automated_marketing").where(
                ConsentState.profile_id.in_({run.profile_id for run in runs})
            )
        )
    )
    for run in runs:
        if run.profile_id in refused:
            run.log.append((run.step_id, "exited:automated_marketing_refused"))
            _end(run, "exited", "automated_marketing_refused", batch.now)


def _check_exits(batch: Batch) -> None:
    """Exit criteria are checked at every step: an exit event since entry ends the instance."""
    _check_refusals(batch)
    runs = [run for run in batch.runs if any("event" in e for e in run.plan.exits)]
    if not runs:
        return
    runs = [run for run in runs if not run.settled]
    if not runs:
        return
    names = {e["event"] for run in runs for e in run.plan.exits if "event" in e}
    events = _events({run.profile_id for run in runs}, names, min(r.entered_at for r in runs))
    for run in runs:
        for name, at, properties in events.get(run.profile_id, []):
            if at < run.entered_at:
                continue
            if any(e.get("event") == name and where_matches(e.get("where"), properties)
                   for e in run.plan.exits):  # fmt: skip
                run.log.append((run.step_id, "exited:exit_event"))
                _end(run, "exited", "exit_event", batch.now)
                break


def _events(profile_ids: set[int], names: set[str], since: datetime) -> dict[int, list]:
    found = defaultdict(list)
    rows = db.session.execute(
        sa.select(Event.profile_id, Event.name, Event.timestamp, Event.properties)
        .where(Event.profile_id.in_(profile_ids), Event.name.in_(names), Event.timestamp >= since)
        .order_by(Event.timestamp)
    )
    for profile_id, name, at, properties in rows:
        found[profile_id].append((name, at, properties or {}))
    return found


def _step_round(batch: Batch, runs: list[Run]) -> None:
    by_type = defaultdict(list)
    for run in runs:
        by_type[run.plan.steps[run.step_id]["type"]].append(run)
    if by_type["branch"]:
        _branches(batch, by_type.pop("branch"))
    if by_type["wait_for_event"]:
        _waits_for_events(batch, by_type.pop("wait_for_event"))
    if by_type["send"]:
        _prepare_caps(batch, by_type["send"])
    for kind, group in by_type.items():
        for run in group:
            step = run.plan.steps[run.step_id]
            if kind == "wait":
                _wait_step(batch, run, step)
            elif kind == "split":
                _split(run, step, batch.now)
            elif kind == "send":
                _send(batch, run, step)
            elif kind in EFFECT_STEPS:
                _effect(batch, run, step, kind)
                _arrive(run, step.get("next"), "done", batch.now)
            else:  # exit
                _arrive(run, None, "done", batch.now)


def _wait_step(batch: Batch, run: Run, step: dict) -> None:
    target = wait_target(step, run.step_entered_at, run.traits, run.context or {})
    if target is None:  # the date it waits for is unknown: nothing sensible to wait for
        run.log.append((run.step_id, "exited:missing_date"))
        _end(run, "exited", "missing_date", batch.now)
    elif target <= batch.now:
        _arrive(run, step.get("next"), "done", batch.now)
    else:
        _wait(run, target)


def _branches(batch: Batch, runs: list[Run]) -> None:
    groups = defaultdict(list)
    for run in runs:
        groups[(run.version_id, run.step_id)].append(run)
    for group in groups.values():
        step = group[0].plan.steps[group[0].step_id]
        ids = sorted({run.profile_id for run in group})
        query = compile_query({"rule": step["condition"]}, make_context(batch.now, scope=ids))
        matched = set(db.session.scalars(query))
        for run in group:
            yes = run.profile_id in matched
            _arrive(
                run, step["then"] if yes else step["else"], "then" if yes else "else", batch.now
            )


def _waits_for_events(batch: Batch, runs: list[Run]) -> None:
    names = {run.plan.steps[run.step_id]["event"] for run in runs}
    events = _events({run.profile_id for run in runs}, names, min(r.step_entered_at for r in runs))
    for run in runs:
        step = run.plan.steps[run.step_id]
        hit = any(
            name == step["event"]
            and at >= run.step_entered_at
            and where_matches(step.get("where"), properties)
            and (
                not step.get("match_entry_key") or carries_key(run.plan, properties, run.entry_key)
            )
            for name, at, properties in events.get(run.profile_id, [])
        )
        timeout = run.step_entered_at + parse_duration(step["timeout"])
        if hit:
            _arrive(run, step["next"], "event", batch.now)
        elif timeout <= batch.now:
            _arrive(run, step["timeout_next"], "timeout", batch.now)
        else:
            _wait(run, timeout, waiting_event=step["event"])


def _split(run: Run, step: dict, now: datetime) -> None:
    seed = f"{run.id}:{run.step_id}:{(run.visits or {}).get(run.step_id, 1)}".encode()
    bucket = int.from_bytes(hashlib.sha256(seed).digest()[:4], "big") % 100
    total = 0
    for index, path in enumerate(step["paths"]):
        total += path["percent"]
        if bucket < total or index == len(step["paths"]) - 1:
            if path.get("holdout"):
                run.log.append((run.step_id, "holdout"))
                _end(run, "completed", "holdout", now, holdout=True)
            else:
                _arrive(run, path["next"], f"path:{index}", now)
            return


# --- side effects -------------------------------------------------------------------------------


def _key(run: Run) -> str:
    return f"{run.id}:{run.step_id}:{(run.visits or {}).get(run.step_id, 1)}"


def _effect(batch: Batch, run: Run, step: dict, action: str, **extra) -> None:
    params = {k: v for k, v in step.items() if k not in ("id", "type", "label", "next")}
    batch.deliveries.append(
        {
            "key": _key(run),
            "journey_id": run.journey_id,
            "version_id": run.version_id,
            "instance_id": run.id,
            "step_id": run.step_id,
            "profile_id": run.profile_id,
            "action": action,
            "channel": step.get("channel") or ("webhook" if action == "webhook" else None),
            "content_version_id": step.get("content_version_id"),
            "category": extra.pop("category", "service"),
            "status": extra.pop("status", "pending"),
            "reason": extra.pop("reason", None),
            "next_attempt_at": extra.pop("next_attempt_at", batch.now),
            "payload": {"step": params, "context": run.context or {}, "entry_key": run.entry_key},
            "test": run.test,
            "created_at": batch.now,
            "updated_at": batch.now,
        }
    )


def _prepare_caps(batch: Batch, runs: list[Run]) -> None:
    """Load the content versions of these sends and their profiles' recent marketing sends."""
    wanted = {run.plan.steps[run.step_id].get("content_version_id") for run in runs}
    missing = {v for v in wanted if v and v not in batch.versions}
    if missing:
        for version in db.session.scalars(
            sa.select(ContentVersion).where(ContentVersion.id.in_(missing))
        ):
            batch.versions[version.id] = version
    caps = setting("JOURNEY_FREQUENCY_CAPS")
    longest = max((days for _, days in caps.values()), default=0)
    profiles = {run.profile_id for run in runs} - {p for p, _ in batch.sends}
    if not profiles or not longest:
        return
    for profile_id in profiles:
        for channel in caps:
            batch.sends.setdefault((profile_id, channel), [])
    rows = db.session.execute(
        sa.select(Delivery.profile_id, Delivery.channel, Delivery.created_at).where(
            Delivery.profile_id.in_(profiles),
            Delivery.created_at >= batch.now - timedelta(days=longest),
            Delivery.action == "send",
            Delivery.category == "marketing",
            Delivery.status.in_(COUNTED),
            Delivery.test.is_(False),
        )
    )
    for profile_id, channel, at in rows:
        batch.sends.setdefault((profile_id, channel), []).append(at)


def _capped_until(batch: Batch, run: Run, channel: str) -> datetime | None:
    """If one more marketing send on ``channel`` breaks the cap: when it would not."""
    cap = setting("JOURNEY_FREQUENCY_CAPS").get(channel)
    if not cap:
        return None
    limit, days = cap
    since = batch.now - timedelta(days=days)
    recent = sorted(at for at in batch.sends.get((run.profile_id, channel), []) if at >= since)
    if len(recent) < limit:
        return None
    return recent[len(recent) - limit] + timedelta(days=days)


def _send(batch: Batch, run: Run, step: dict) -> None:
    version = batch.versions.get(step.get("content_version_id"))
    category = version.category if version is not None else "service"
    policy = None
    held = quiet_until(batch.now, quiet_window(run.plan.definition), run.traits)
    if held is not None:
        reason = "quiet_hours"
        policy = (run.plan.definition.get("quiet_hours") or {}).get("policy", "defer")
    elif category == "marketing" and not run.test:
        held = _capped_until(batch, run, step["channel"])
        reason = "frequency_cap"
        policy = run.plan.definition.get("frequency_cap_policy", "skip") if held else None
    if held is not None and policy == "defer":
        run.log.append((run.step_id, f"deferred:{reason}"))
        _wait(run, held)
        return
    if held is not None:  # skipped, and recorded as such
        _effect(batch, run, step, "send", category=category, status="skipped", reason=reason,
                next_attempt_at=None)  # fmt: skip
    else:
        _effect(batch, run, step, "send", category=category)
        if category == "marketing":
            batch.sends.setdefault((run.profile_id, step["channel"]), []).append(batch.now)
    _arrive(run, step.get("next"), "done", batch.now)


# --- writing ------------------------------------------------------------------------------------

_UPDATED = ("step_id", "state", "next_run_at", "waiting_event", "step_entered_at", "ended_at")
_UPDATED += ("exit_reason", "holdout", "visits")


def _write(batch: Batch, paused: list[int]) -> list[int]:
    session = db.session
    if paused:
        session.execute(
            sa.update(I).where(I.c.id.in_(paused)).values(lease_until=batch.now + PAUSED_RETRY)
        )
    if batch.runs:
        updates = [
            {"id": run.id, "lease_until": None, **{k: run.row[k] for k in _UPDATED}}
            for run in batch.runs
        ]
        session.execute(sa.update(JourneyInstance), updates)
        logs = [
            {"instance_id": run.id, "journey_id": run.journey_id, "version_id": run.version_id,
             "step_id": step_id, "outcome": outcome, "at": batch.now}
            for run in batch.runs for step_id, outcome in run.log if step_id
        ]  # fmt: skip
        if logs:
            session.execute(sa.insert(JourneyStepLog), logs)
    if not batch.deliveries:
        return []
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = insert(Delivery).on_conflict_do_nothing(index_elements=["key"])
    rows = session.execute(statement.returning(Delivery.id, Delivery.status), batch.deliveries)
    return [delivery_id for delivery_id, status in rows if status == "pending"]
