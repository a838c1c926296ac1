"""Journey reporting: totals, exits, the per-step funnel and deliveries, goal conversion vs holdout.

Every figure comes from a grouped SQL query (instances, the step log, the delivery outbox);
Python only folds the few grouped rows. Test-mode instances and deliveries are left out.

Step log outcomes (written by the engine): ``entered`` when an instance arrives at a step;
when it leaves, ``done`` (plain steps), ``then``/``else`` (branch), ``event``/``timeout``
(wait_for_event), ``path:<n>``/``holdout`` (split); ``deferred:<reason>`` (a send put off,
the instance stays), ``exited:<reason>`` and ``failed:<reason>``. A step's ``completed`` counts
the leaving outcomes.
"""

from __future__ import annotations

import math

import sqlalchemy as sa

from cdp.db import db
from journeys.definition import steps_by_id
from journeys.models import LIVE_STATES, Delivery, JourneyInstance, JourneyStepLog
from journeys.service import get_journey, get_version

Z95 = 1.959964  # two-sided 95% normal quantile
INSTANCE_TOTALS = ("entered", "active", "waiting", "completed", "exited", "failed", "converted")
# Marketing journeys record the global control group's would-be entrants as ended instances
# (exit_reason "global_control", holdout): counted apart, and in the goal's holdout group.
CONTROL = "global_control"
NOT_COMPLETED = ("entered", "deferred", "exited", "failed")
SENT = ("sent", "delivered")
FAILED = ("failed", "uncertain")


def _step_row() -> dict:
    return {
        "entered": 0,
        "now": 0,
        "completed": 0,
        "exited": 0,
        "sent": 0,
        "delivered": 0,
        "failed": 0,
        "skipped": {},
        "deferred": 0,
        "preview": 0,
        "outcomes": {},  # every step-log outcome, e.g. then/else, path:0 (the graph's edges)
    }


def _group(n: int, converted: int) -> dict:
    return {"n": n, "converted": converted, "rate": converted / n if n else None}


def _goal(treatment: dict, holdout: dict) -> dict:
    """Conversion of treatment vs holdout: the difference and its Wald 95% interval."""
    result = {"treatment": treatment, "holdout": holdout, "lift": None, "ci95": None}
    if not treatment["n"] or not holdout["n"]:
        return result
    p1, n1, p2, n2 = treatment["rate"], treatment["n"], holdout["rate"], holdout["n"]
    lift = p1 - p2
    margin = Z95 * math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    result.update(lift=lift, ci95=[lift - margin, lift + margin])
    return result


def _definition(journey, version) -> dict:
    if version is not None:
        return version.definition
    if journey.live_version is not None:
        return get_version(journey.id, journey.live_version).definition
    return journey.draft if isinstance(journey.draft, dict) else {}


def _instances(where) -> tuple[dict, dict, dict, dict]:
    """Totals, exits by reason, live instances per step, and goal groups."""
    i = JourneyInstance
    live_step = sa.case((i.state.in_(LIVE_STATES), i.step_id), else_=None)
    reason = sa.case((i.state == "exited", i.exit_reason), else_=None)
    rows = db.session.execute(
        sa.select(
            i.state, i.holdout, reason, live_step, sa.func.count(), sa.func.count(i.converted_at)
        )
        .where(*where)
        .group_by(i.state, i.holdout, reason, live_step)
    ).all()
    totals = dict.fromkeys((*INSTANCE_TOTALS, CONTROL), 0)
    exits: dict[str, int] = {}
    now: dict[str, int] = {}
    groups = {True: [0, 0], False: [0, 0]}
    for state, holdout, exit_reason, step_id, n, converted in rows:
        groups[bool(holdout)][0] += n
        groups[bool(holdout)][1] += converted
        if exit_reason == CONTROL:  # never entered: kept only to compare conversions
            totals[CONTROL] += n
            continue
        totals["entered"] += n
        totals[state] = totals.get(state, 0) + n
        totals["converted"] += converted
        if state == "exited":
            exits[exit_reason or "unknown"] = exits.get(exit_reason or "unknown", 0) + n
        if step_id is not None:
            now[step_id] = now.get(step_id, 0) + n
    return totals, exits, now, groups


class _Steps(dict):
    """step id -> counts; steps the data names but the definition lacks are added."""

    def __missing__(self, step_id: str) -> dict:
        self[step_id] = _step_row()
        return self[step_id]

    def add_outcome(self, step_id: str, outcome: str, n: int) -> None:
        counts, head = self[step_id], outcome.partition(":")[0]
        counts["outcomes"][outcome] = n
        if head == "entered":
            counts["entered"] += n
        elif head == "exited":
            counts["exited"] += n
        elif head not in NOT_COMPLETED:
            counts["completed"] += n

    def add_delivery(self, step_id: str, status: str, reason: str | None, n: int) -> None:
        counts = self[step_id]
        if status in SENT:
            counts["sent"] += n
        if status == "delivered":
            counts["delivered"] += n
        elif status in FAILED:
            counts["failed"] += n
        elif status == "skipped":
            skipped = counts["skipped"]
            skipped[reason or "unknown"] = skipped.get(reason or "unknown", 0) + n
        elif status in ("deferred", "preview"):
            counts[status] += n


def journey_stats(journey_id: int, version: int | None = None) -> dict:
    """Totals, exits by reason, per-step counts and the goal comparison (one version or all)."""
    journey = get_journey(journey_id)
    chosen = get_version(journey_id, version) if version is not None else None
    only = chosen.id if chosen is not None else None
    i, log, d = JourneyInstance, JourneyStepLog, Delivery
    real = [i.journey_id == journey_id, i.test.is_(False)]
    totals, exits, now, groups = _instances(real + ([i.version_id == only] if only else []))

    steps = _Steps((s, _step_row()) for s in steps_by_id(_definition(journey, chosen)))
    for step_id, n in now.items():
        steps[step_id]["now"] = n
    outcomes = (
        sa.select(log.step_id, log.outcome, sa.func.count())
        .join(i, i.id == log.instance_id)
        .where(log.journey_id == journey_id, *real)
        .group_by(log.step_id, log.outcome)
    )
    if only:
        outcomes = outcomes.where(log.version_id == only)
    for row in db.session.execute(outcomes):
        steps.add_outcome(*row)
    sends = (
        sa.select(d.step_id, d.status, d.reason, sa.func.count())
        .where(d.journey_id == journey_id, d.test.is_(False))
        .group_by(d.step_id, d.status, d.reason)
    )
    if only:
        sends = sends.where(d.version_id == only)
    for row in db.session.execute(sends):
        steps.add_delivery(*row)
    return {
        "journey_id": journey_id,
        "version": version,
        "totals": totals,
        "exits": exits,
        "steps": dict(steps),
        "goal": _goal(_group(*groups[False]), _group(*groups[True])),
    }


def deliveries(
    profile_id: int | None = None,
    journey_id: int | None = None,
    status: str | None = None,
    limit: int = 100,
    before_id: int | None = None,
) -> list[Delivery]:
    """The outbox, newest first: what was sent, skipped or deferred, and why."""
    query = sa.select(Delivery)
    if profile_id is not None:
        query = query.where(Delivery.profile_id == profile_id)
    if journey_id is not None:
        query = query.where(Delivery.journey_id == journey_id)
    if status is not None:
        query = query.where(Delivery.status == status)
    if before_id is not None:
        query = query.where(Delivery.id < before_id)
    return list(db.session.scalars(query.order_by(Delivery.id.desc()).limit(limit)))
