"""Performing the delivery outbox: each row's effect happens once, whatever crashes in between.

A row is written (``pending``, unique key) in the same transaction as the step that
wants it. Performing it: claim it (``sending``, a lease), re-check the guards (consent may
have been withdrawn while the person waited) and render the message, committing the
rendered message BEFORE the provider is called; then call the provider with the row's key
as idempotency key; then record the result. A worker that dies in between leaves a
``sending`` row whose lease expires; ``recover`` then resends it only when that is safe:
the provider was never asked (``sent_at``, stamped just before the call, is unset), or
the provider dedupes on our key (WeChat
``client_msg_id``, webhook ``Idempotency-Key``, our own coupons and points). Otherwise the
row becomes ``uncertain`` and is never sent again.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import sqlalchemy as sa

from cdp.actors import SYSTEM
from cdp.content.guards import SendBlocked, prepare_send
from cdp.content.library import get_item, get_version
from cdp.db import db, lock_for_writing, transaction, utcnow
from cdp.exceptions import CdpError
from cdp.identity.traits import PII_TRAIT_KEYS
from cdp.loyalty.coupons import issue_coupon
from cdp.loyalty.points import earn_action
from cdp.models import Profile
from cdp.models.loyalty import Coupon
from journeys.channels import (
    Outbound,
    PermanentError,
    RateLimited,
    TransientError,
    get_channel,
)
from journeys.models import ChannelUnreachable, Delivery, JourneyInstance
from journeys.settings import setting
from segments.membership import emit_internal_event

log = logging.getLogger(__name__)
D = Delivery.__table__
ORDER_RETRY = timedelta(seconds=2)  # an earlier effect of the same instance is still going
INTERNAL = ("issue_coupon", "award_points", "update_trait")  # idempotent by our own key
RENDERED = ("send", "webhook")  # checked against the content guards and rendered first


def _lease(now: datetime) -> datetime:
    return now + timedelta(seconds=int(setting("JOURNEY_LEASE_SECONDS")))


def perform(delivery_ids: list[int], now: datetime | None = None) -> dict:
    """Perform the given deliveries that are due; returns counts by outcome.

    The claimed sends are checked and rendered together in one transaction (committed
    before any provider is called); then each is performed and recorded on its own.
    """
    now = now or utcnow()
    outcomes: dict[str, int] = {}

    def count(outcome: str) -> None:
        outcomes[outcome] = outcomes.get(outcome, 0) + 1

    claimed = _claim(delivery_ids, now)
    if not claimed:
        return outcomes
    ready = _prepare(claimed, now, count)
    for delivery_id in ready:
        count(_perform_claimed(delivery_id, now))
    return outcomes


def _prepare(claimed: list[int], now: datetime, count) -> list[int]:
    """Hold back what must wait, render the sends; returns the ids to perform now."""
    ready = []
    with transaction() as session:
        lock_for_writing(session, wait_ms=30_000)
        rows = session.scalars(
            sa.select(Delivery).where(Delivery.id.in_(claimed)).order_by(Delivery.id)
            .execution_options(populate_existing=True)
        ).all()  # fmt: skip
        holds = _holds(rows)
        for delivery in rows:
            hold = holds.get(delivery.id)
            if hold == "postponed":
                delivery.status, delivery.attempts = "pending", delivery.attempts - 1
                delivery.next_attempt_at, delivery.claimed_until = now + ORDER_RETRY, None
                count("postponed")
            elif hold == "exited":
                _skip(delivery, "instance_exited", "", now)
                count("skipped")
            elif delivery.action in RENDERED and "message" not in delivery.payload:
                blocked = _render(session, delivery, now)
                if blocked is None:
                    ready.append(delivery.id)
                else:
                    _skip(delivery, blocked.reason, str(blocked)[:1000], now)
                    count("skipped")
            else:
                ready.append(delivery.id)
    return ready


def _skip(delivery: Delivery, reason: str, detail: str, now: datetime) -> None:
    delivery.status, delivery.reason, delivery.detail = "skipped", reason, detail
    delivery.next_attempt_at, delivery.claimed_until, delivery.updated_at = None, None, now


def _claim(delivery_ids: list[int], now: datetime) -> list[int]:
    """Claim the due ones among ``delivery_ids`` (one statement); returns them in id order."""
    with transaction() as session:
        lock_for_writing(session, wait_ms=30_000)
        claimed = session.scalars(
            sa.update(D)
            .where(
                D.c.id.in_(delivery_ids),
                D.c.status == "pending",
                sa.or_(D.c.next_attempt_at.is_(None), D.c.next_attempt_at <= now),
            )
            .values(
                status="sending",
                attempts=D.c.attempts + 1,
                claimed_until=_lease(now),
                next_attempt_at=_lease(now),
                updated_at=now,
            )
            .returning(D.c.id)
        ).all()
    return sorted(claimed)


def _finish(delivery_id: int, status: str, **values) -> None:
    """Record the outcome of a claimed delivery (``pending`` again to retry later)."""
    now = utcnow()
    if status != "pending":
        values.setdefault("next_attempt_at", None)
    if status in ("sent", "preview"):
        values.setdefault("sent_at", now)
    with transaction() as session:
        lock_for_writing(session, wait_ms=30_000)
        session.execute(
            sa.update(D)
            .where(D.c.id == delivery_id, D.c.status == "sending")
            .values(status=status, claimed_until=None, updated_at=now, **values)
        )


def _perform_claimed(delivery_id: int, now: datetime) -> str:
    delivery = db.session.get(Delivery, delivery_id, populate_existing=True)
    try:
        return ACTIONS[delivery.action](delivery, now)
    except Exception:
        log.exception("delivery %s failed unexpectedly", delivery_id)
        db.session.rollback()
        _retry(delivery, "internal_error", "", None)
        return "retry"


def _holds(rows: list[Delivery]) -> dict[int, str]:
    """Delivery id -> why not now, for the claimed rows (two queries for all of them): an
    earlier effect of the instance is still going (effects of one instance happen in order:
    the coupon before the message announcing it), or the instance exited."""
    instance_ids = {d.instance_id for d in rows if d.instance_id is not None}
    if not instance_ids:
        return {}
    states = dict(
        db.session.execute(
            sa.select(JourneyInstance.id, JourneyInstance.state).where(
                JourneyInstance.id.in_(instance_ids)
            )
        ).all()
    )
    first_open = dict(
        db.session.execute(
            sa.select(D.c.instance_id, sa.func.min(D.c.id))
            .where(D.c.instance_id.in_(instance_ids), D.c.status.in_(("pending", "sending")))
            .group_by(D.c.instance_id)
        ).all()
    )
    holds = {}
    for d in rows:
        if d.instance_id is None:
            continue
        if first_open.get(d.instance_id, d.id) < d.id:
            holds[d.id] = "postponed"
        elif states.get(d.instance_id) == "exited":
            holds[d.id] = "exited"
    return holds


def _retry(delivery: Delivery, reason: str, detail: str, retry_after: float | None) -> str:
    if delivery.attempts >= int(setting("JOURNEY_SEND_ATTEMPTS")):
        _finish(delivery.id, "failed", reason=reason, detail=detail)
        return "failed"
    backoff = int(setting("JOURNEY_RETRY_SECONDS")) * 2 ** (delivery.attempts - 1)
    wait = max(retry_after or 0, backoff)
    _finish(delivery.id, "pending", reason=reason, detail=detail,
            next_attempt_at=utcnow() + timedelta(seconds=wait))  # fmt: skip
    return "retry"


# --- actions ------------------------------------------------------------------------------------


def _context(delivery: Delivery) -> dict:
    """The journey context, plus the coupon an earlier step of this instance issued."""
    context = dict(delivery.payload.get("context") or {})
    if delivery.instance_id is not None:
        coupon_id = db.session.scalar(
            sa.select(D.c.provider_id)
            .where(
                D.c.instance_id == delivery.instance_id,
                D.c.action == "issue_coupon",
                D.c.status == "sent",
                D.c.id < delivery.id,
            )
            .order_by(D.c.id.desc())
            .limit(1)
        )
        coupon = db.session.get(Coupon, int(coupon_id)) if coupon_id else None
        if coupon is not None:
            context["coupon_code"] = coupon.code
            context["coupon_expires_at"] = (
                coupon.expires_at.isoformat() if coupon.expires_at else ""
            )
    return context


def _render(session, delivery: Delivery, now: datetime) -> SendBlocked | None:
    """Check the guards and render into the payload (a savepoint: a refusal undoes only
    this one, e.g. a consumed subscribe credit); returns the refusal, if any."""
    context = _context(delivery)
    try:
        with session.begin_nested():
            version = get_version(delivery.content_version_id)
            kind = get_item(version.item_id).kind
            message = prepare_send(version, delivery.profile_id, delivery.channel, now, context)
            delivery.payload = {**delivery.payload, "kind": kind, "message": message}
    except SendBlocked as blocked:
        return blocked
    return None


def _send(delivery: Delivery, now: datetime) -> str:
    if delivery.test:
        _finish(delivery.id, "preview")
        return "preview"
    kind, message = delivery.payload["kind"], delivery.payload["message"]
    try:
        channel = get_channel(delivery.channel)
    except PermanentError as error:  # a channel no adapter serves (any more)
        _finish(delivery.id, "failed", reason=error.reason, detail=error.detail)
        return "failed"
    if delivery.sent_at is None:  # from now on the provider may have it (see recover)
        with transaction() as session:
            session.execute(sa.update(D).where(D.c.id == delivery.id).values(sent_at=utcnow()))
    url = (delivery.payload.get("step") or {}).get("url")
    out = Outbound(delivery.key, delivery.profile_id, delivery.channel, kind, message, url)
    try:
        sent = channel.send(out)
    except RateLimited as limited:  # not the send's fault: do not count the attempt
        _finish(delivery.id, "pending", reason=limited.reason, attempts=delivery.attempts - 1,
                next_attempt_at=utcnow() + timedelta(seconds=limited.retry_after or 1))  # fmt: skip
        return "rate_limited"
    except TransientError as error:
        if error.uncertain and not channel.idempotent:
            _finish(delivery.id, "uncertain", reason=error.reason, detail=error.detail)
            return "uncertain"
        return _retry(delivery, error.reason, error.detail, error.retry_after)
    except PermanentError as error:
        if error.unreachable:
            _mark_unreachable(delivery, error.reason)
        _finish(delivery.id, "failed", reason=error.reason, detail=error.detail)
        return "failed"
    _finish(delivery.id, "sent", provider_id=sent.provider_id, response=sent.response or {})
    return "sent"


def _mark_unreachable(delivery: Delivery, reason: str) -> None:
    with transaction() as session:
        row = session.get(ChannelUnreachable, (delivery.profile_id, delivery.channel))
        if row is None:
            session.add(ChannelUnreachable(profile_id=delivery.profile_id,
                                           channel=delivery.channel, reason=reason))  # fmt: skip


def _internal(delivery: Delivery, effect) -> str:
    if delivery.test:
        _finish(delivery.id, "preview")
        return "preview"
    try:
        provider_id, response = effect()
    except CdpError as refused:  # budget exhausted, cap reached, campaign ended …
        db.session.rollback()
        _finish(delivery.id, "skipped", reason=f"{delivery.action}_refused", detail=str(refused))
        return "skipped"
    _finish(delivery.id, "sent", provider_id=provider_id, response=response)
    return "sent"


def _coupon(delivery: Delivery, now: datetime) -> str:
    step = delivery.payload["step"]

    def effect():
        coupon, _ = issue_coupon(SYSTEM, step["campaign_id"], delivery.profile_id, delivery.key)
        return str(coupon.id), {"code": coupon.code}

    return _internal(delivery, effect)


def _points(delivery: Delivery, now: datetime) -> str:
    step = delivery.payload["step"]

    def effect():
        result = earn_action(SYSTEM, delivery.profile_id, step["action"], delivery.key)
        return str(result.entry.id), {"balance": result.balance, "points": result.entry.points}

    return _internal(delivery, effect)


def _trait(delivery: Delivery, now: datetime) -> str:
    step = delivery.payload["step"]
    name, value = step["trait"], step["value"]
    if name in PII_TRAIT_KEYS:
        _finish(delivery.id, "skipped", reason="pii_trait", detail=f"{name} is personal data")
        return "skipped"

    def effect():
        with transaction() as session:
            lock_for_writing(session, wait_ms=30_000)
            profile = session.get(Profile, delivery.profile_id, populate_existing=True)
            traits, times = dict(profile.traits or {}), dict(profile.trait_times or {})
            traits[name], times[name] = value, now.isoformat()
            profile.traits, profile.trait_times = traits, times
            outbox = emit_internal_event(
                profile.id, f"jt-{delivery.key}", "journey_trait_updated", {name: value}, now
            )
        outbox()
        return None, {name: value}

    return _internal(delivery, effect)


# Step type -> how its delivery is performed: fn(delivery, now) -> outcome. Other packages
# add step types with ``register_action`` (and the step's schema and EFFECT_STEPS entry).
ACTIONS = {
    "send": _send,
    "webhook": _send,
    "issue_coupon": _coupon,
    "award_points": _points,
    "update_trait": _trait,
}


def register_action(step_type: str, perform_fn, internal: bool = True) -> None:
    """Perform deliveries of ``step_type`` with ``perform_fn``; ``internal``: idempotent by
    the delivery key (safe to redo after a crash), like coupons and points."""
    global INTERNAL
    ACTIONS[step_type] = perform_fn
    if internal and step_type not in INTERNAL:
        INTERNAL = (*INTERNAL, step_type)


def finish(delivery_id: int, status: str, **values) -> None:
    """For registered actions: record the outcome (sent, skipped with a reason, failed)."""
    _finish(delivery_id, status, **values)


def recover(delivery_ids: list[int], now: datetime | None = None) -> dict:
    """Deliveries whose worker died mid-way (lease expired): resend only when that is safe."""
    now = now or utcnow()
    counts = {"pending": 0, "uncertain": 0}
    for delivery in db.session.scalars(
        sa.select(Delivery).where(
            Delivery.id.in_(delivery_ids), Delivery.status == "sending",
            Delivery.claimed_until < now,
        )
    ).all():  # fmt: skip
        safe = (
            delivery.action in INTERNAL
            or delivery.sent_at is None  # the provider was never asked
            or delivery.test
            or get_channel(delivery.channel).idempotent
        )
        status = "pending" if safe else "uncertain"
        values = {"next_attempt_at": now} if safe else {"reason": "worker_lost"}
        _finish(delivery.id, status, **values)
        counts[status] += 1
    return counts


# For registered actions: run ``effect() -> (provider_id, response)``; CdpError -> skipped.
run_internal = _internal
