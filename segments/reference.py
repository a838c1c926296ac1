"""The reference evaluator: load every live profile's facts and apply the rule in Python.

Slow on purpose (it reads everything); it is the plain statement of what a definition
means, which the compiled SQL must agree with (tests, and ``cdp segments verify``).
"""

from __future__ import annotations

import sqlalchemy as sa

from cdp.db import db
from cdp.models import ConsentState, Event, Identity, Profile
from cdp.models.hcp import KnowledgeScore
from cdp.models.loyalty import Coupon, PointAccount
from segments.compiler import analyze, evaluate
from segments.conditions import Context, Facts
from segments.conditions.journey import INSTANCES
from segments.propensity.models import ModelVersion, PropensityModel, PropensityScore


def load_facts(profile_ids: list[int] | None = None) -> list[Facts]:
    """Facts of the live profiles (or of those among ``profile_ids``)."""

    def only(query, column):
        return query if profile_ids is None else query.where(column.in_(profile_ids))

    session = db.session
    people = {
        pid: Facts(pid, kind, traits or {})
        for pid, kind, traits in session.execute(
            only(
                sa.select(Profile.id, Profile.kind, Profile.traits).where(
                    Profile.merged_into_id.is_(None)
                ),
                Profile.id,
            )
        )
    }
    for pid, type_, namespace in session.execute(
        only(sa.select(Identity.profile_id, Identity.type, Identity.namespace), Identity.profile_id)
    ):
        if pid in people:
            people[pid].identities.add((type_, namespace))
    events = sa.select(Event.profile_id, Event.name, Event.timestamp, Event.properties).where(
        Event.profile_id.is_not(None)
    )
    for pid, name, ts, props in session.execute(only(events, Event.profile_id)):
        if pid in people:
            people[pid].events.append((name, ts, props if props is not None else {}))
    consents = sa.select(
        ConsentState.profile_id, ConsentState.purpose, ConsentState.channel, ConsentState.status
    )
    for pid, purpose, channel, status in session.execute(only(consents, ConsentState.profile_id)):
        if pid in people:
            people[pid].consents[(purpose, channel)] = status
    _load_derived(session, people, only)
    return list(people.values())


def _load_derived(session, people: dict, only) -> None:
    """Facts other packages keep: propensity scores, doctors' knowledge, journey instances."""
    scores = (
        sa.select(
            PropensityScore.profile_id,
            PropensityModel.name,
            PropensityScore.score,
            PropensityScore.rank,
            ModelVersion.scored_count,
            ModelVersion.health_data,
        )
        .join(ModelVersion, ModelVersion.id == PropensityScore.model_version_id)
        .join(PropensityModel, PropensityModel.id == ModelVersion.model_id)
        .where(ModelVersion.active.is_(True))
    )
    for pid, name, score, rank, scored, health in session.execute(
        only(scores, PropensityScore.profile_id)
    ):
        if pid in people:
            people[pid].scores[name] = (score, rank, scored, health)
    knowledge = sa.select(KnowledgeScore.profile_id, KnowledgeScore.dimension, KnowledgeScore.score)
    for pid, dimension, score in session.execute(only(knowledge, KnowledgeScore.profile_id)):
        if pid in people:
            people[pid].knowledge[dimension] = score
    instances = sa.select(
        INSTANCES.c.profile_id,
        INSTANCES.c.journey_id,
        INSTANCES.c.state,
        INSTANCES.c.converted_at.is_not(None),
    ).where(
        INSTANCES.c.test.is_(False),
        sa.or_(INSTANCES.c.exit_reason.is_(None), INSTANCES.c.exit_reason != "global_control"),
    )
    for pid, journey_id, state, converted in session.execute(
        only(instances, INSTANCES.c.profile_id)
    ):
        if pid in people:
            people[pid].journeys.append((journey_id, state, bool(converted)))
    coupons = sa.select(
        Coupon.profile_id, Coupon.campaign_id, Coupon.status, Coupon.valid_from, Coupon.expires_at
    )
    for pid, *coupon in session.execute(only(coupons, Coupon.profile_id)):
        if pid in people:
            people[pid].coupons.append(tuple(coupon))
    accounts = sa.select(PointAccount.profile_id, PointAccount.balance).where(
        PointAccount.merged_into_id.is_(None)
    )
    for pid, balance in session.execute(only(accounts, PointAccount.profile_id)):
        if pid in people:
            people[pid].points += balance


def reference_members(definition: dict, ctx: Context, facts: list[Facts] | None = None) -> set[int]:
    analysis = analyze(definition, ctx.load_segment)
    facts = load_facts(ctx.scope) if facts is None else facts
    return {f.id for f in facts if evaluate(definition, f, ctx, analysis)}
