"""Event retention (PIPL Art. 47: delete when the retention period ends), and the periodic jobs
of this package: the retention purge, content expiry, and re-enqueueing lost erasures.

A rule keeps events of one name for N days; the rule named ``*`` applies to every event
name without a rule of its own (identify/page events have no name and fall under ``*``).
Without any rule nothing is purged.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa

from cdp import audit
from cdp.actors import Actor
from cdp.auth.permissions import require
from cdp.content.operations import expire_due
from cdp.db import db, transaction, utcnow
from cdp.exceptions import NotFound, ValidationFailed
from cdp.models import Event
from cdp.models.privacy import RetentionRule
from cdp.privacy.erasure import requeue_stale_erasures
from cdp.queue import PeriodicJob, register_periodic, task
from cdp.sweeper import register_sweep_hook

DEFAULT_RULE = "*"
MAX_DAYS = 36500
_BATCH = 5000
RETENTION_ACTOR = Actor(kind="system", role="admin", request_id="retention")

RETENTION_JOB = PeriodicJob(
    name="privacy-retention",
    func="cdp.privacy.retention.purge_expired_events",
    interval=3600,
    queue="default",
)
CONTENT_EXPIRY_JOB = PeriodicJob(
    name="content-expiry", func="cdp.privacy.retention.expire_content", interval=3600
)


def list_rules() -> list[RetentionRule]:
    return list(db.session.scalars(sa.select(RetentionRule).order_by(RetentionRule.event_name)))


def set_rule(actor: Actor, event_name: str, days: int) -> RetentionRule:
    require(actor, "privacy:retention")
    event_name = (event_name or "").strip()
    if not event_name or len(event_name) > 200:
        raise ValidationFailed(
            "an event name (or * for every other event) is required", "event_name"
        )
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise ValidationFailed(f"days must be a whole number from 1 to {MAX_DAYS}", "days")
    with transaction() as session:
        rule = session.get(RetentionRule, event_name)
        before = rule.days if rule else None
        if rule is None:
            rule = RetentionRule(event_name=event_name, days=days)
            session.add(rule)
        rule.days, rule.updated_at, rule.updated_by_id = days, utcnow(), actor.user_id
        audit.record(
            actor, "privacy.retention_set", "retention_rule", event_name, days=days, before=before
        )
    return rule


def delete_rule(actor: Actor, event_name: str) -> None:
    require(actor, "privacy:retention")
    with transaction() as session:
        rule = session.get(RetentionRule, event_name)
        if rule is None:
            raise NotFound("no retention rule for this event name", "event_name")
        session.delete(rule)
        audit.record(actor, "privacy.retention_delete", "retention_rule", event_name)


def _expired_ids(rule: RetentionRule, named: list[str], now: datetime) -> list[int]:
    query = sa.select(Event.id).where(Event.timestamp < now - timedelta(days=rule.days))
    if rule.event_name == DEFAULT_RULE:
        query = query.where(sa.or_(Event.name.is_(None), Event.name.not_in(named)))
    else:
        query = query.where(Event.name == rule.event_name)
    return list(db.session.scalars(query.order_by(Event.id).limit(_BATCH)))


def delete_events(ids: list[int]) -> int:
    """Delete events and every row that references them through a foreign key."""
    events = Event.__table__
    for table in reversed(db.metadata.sorted_tables):
        for fk in table.foreign_keys:
            if fk.column.table is events and table is not events:
                db.session.execute(sa.delete(table).where(fk.parent.in_(ids)))
    return db.session.execute(sa.delete(events).where(events.c.id.in_(ids))).rowcount


@task
def purge_expired_events(now: str | None = None) -> dict:
    """Delete events older than their rule allows, in batches; audited with counts."""
    moment = datetime.fromisoformat(now) if now else utcnow()
    rules = list_rules()
    named = [r.event_name for r in rules if r.event_name != DEFAULT_RULE]
    purged: dict[str, int] = {}
    for rule in rules:
        while ids := _expired_ids(rule, named, moment):
            with transaction():
                purged[rule.event_name] = purged.get(rule.event_name, 0) + delete_events(ids)
    if purged:
        with transaction():
            audit.record(RETENTION_ACTOR, "privacy.retention_purge", None, None, purged=purged)
    return purged


@task
def expire_content() -> int:

    return expire_due(Actor(kind="system", role="admin", request_id="content-expiry"))


def init_app(app) -> None:

    register_periodic(RETENTION_JOB)
    register_periodic(CONTENT_EXPIRY_JOB)
    register_sweep_hook("privacy-erasures", requeue_stale_erasures)
