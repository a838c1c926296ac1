"""The points ledger: earn, burn, adjust and reverse, each once per idempotency key.

The balance lives on the profile's account row and equals both the sum of its ledger
lines and the sum of its unspent lots; every change locks the account row first
(``SELECT … FOR UPDATE`` / SQLite ``BEGIN IMMEDIATE``), so concurrent burns queue up and
the second sees what the first left. A CHECK constraint backs it: a balance below zero
cannot be committed. Burns and expiry take the oldest lots first (FIFO).
"""

from __future__ import annotations

from dataclasses import dataclass
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import current_app

from cdp import audit
from cdp.actors import Actor
from cdp.auth.permissions import require
from cdp.db import db, transaction, utcnow
from cdp.exceptions import Conflict, NotFound, ValidationFailed
from cdp.loyalty.accounts import add_lot, expiry, lock_account, post, take
from cdp.loyalty.common import (
    begin_write,
    emit_events,
    hand_off,
    live_profile,
    record_change,
    setting,
    to_fen,
)
from cdp.loyalty.partners import PartnerActor, require_store
from cdp.loyalty.products import classify
from cdp.models import Profile
from cdp.models.loyalty import PointAccount, PointEntry
from cdp.profiles import profile_family

EVENT_NAMES = {
    "earn": "points_earned",
    "burn": "points_burned",
    "expire": "points_expired",
    "adjust": "points_adjusted",
    "reverse": "points_reversed",
}
MAX_POINTS = 10_000_000


@dataclass
class PointsResult:
    entry: PointEntry
    balance: int
    replayed: bool = False


class _CapRefused(Exception):
    def __init__(self, profile_id: int, requested: int, awarded: int, cap: int):
        super().__init__("cap")
        self.profile_id, self.requested, self.awarded, self.cap = (
            profile_id,
            requested,
            awarded,
            cap,
        )


def _key(key: str | None, field: str = "idempotency_key") -> str:
    key = (key or "").strip()
    if not key or len(key) > 128:
        raise ValidationFailed(f"{field} is required (at most 128 characters)", field)
    return key


def _points(value, field: str = "points", signed: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationFailed(f"{field} must be a whole number", field)
    if not (signed and value != 0 or value > 0) or abs(value) > MAX_POINTS:
        raise ValidationFailed(f"{field} must be {'non-zero' if signed else 'positive'}", field)
    return value


# --- the operation frame ----------------------------------------------------------------------


def _run(actor: Actor, profile_id: int, scope: str, key: str, kind: str, body) -> PointsResult:
    """Lock, replay an idempotent retry, run ``body``, then event, change and audit rows."""
    try:
        with transaction() as session:
            begin_write(session)
            profile = live_profile(profile_id)
            account = lock_account(session, profile, actor)
            done = session.scalar(
                sa.select(PointEntry).where(
                    PointEntry.scope == scope, PointEntry.idempotency_key == key
                )
            )
            if done is not None:
                owner = session.get(PointAccount, done.account_id)
                if done.kind != kind or owner.profile_id not in profile_family(profile.id):
                    raise Conflict(
                        "idempotency_key was used for another request", "idempotency_key"
                    )
                return PointsResult(done, account.balance, replayed=True)
            entry = body(session, profile, account)
            outbox = emit_events(
                [
                    {
                        "profile_id": profile.id,
                        "name": EVENT_NAMES[entry.kind],
                        "message_id": f"points:{entry.id}",
                        "properties": {
                            "entry_id": entry.id,
                            "points": entry.points,
                            "balance": entry.balance_after,
                            "rule": entry.rule,
                            "partner_id": entry.partner_id,
                        },
                    }
                ]
            )
            record_change(
                profile.id,
                "points",
                {"balance": entry.balance_after, "delta": entry.points, "entry": entry.kind},
            )
            details = {"points": entry.points, "entry": entry.id}
            if profile.kind == "hcp":
                details["hcp"] = True
            audit.record(actor, f"points.{entry.kind}", "profile", profile.id, **details)
    except _CapRefused as refusal:
        with transaction():
            audit.record(
                actor,
                "points.hcp_cap_refused",
                "profile",
                refusal.profile_id,
                outcome="refused",
                requested=refusal.requested,
                awarded=refusal.awarded,
                cap=refusal.cap,
            )
        raise Conflict(
            f"annual points cap for doctors: {refusal.awarded} of {refusal.cap} points awarded "
            f"this year, {refusal.requested} more would exceed it",
            "points",
        ) from None
    hand_off(outbox)
    return PointsResult(entry, entry.balance_after)


def _check_hcp_cap(session, profile: Profile, account: PointAccount, points: int) -> None:
    if profile.kind != "hcp" or points <= 0:
        return
    cap = setting("LOYALTY_HCP_ANNUAL_CAP")
    zone = ZoneInfo(current_app.config.get("TIMEZONE") or "Asia/Shanghai")
    year_start = (
        utcnow().astimezone(zone).replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
    )
    accounts = sa.select(PointAccount.id).where(
        PointAccount.profile_id.in_(profile_family(profile.id))
    )
    awarded_line = sa.or_(
        PointEntry.kind == "earn",
        # Points moved by a merge or its undo were awarded once already.
        sa.and_(
            PointEntry.kind == "adjust",
            PointEntry.points > 0,
            PointEntry.rule.not_in(("merge", "unmerge")),
        ),
        sa.and_(PointEntry.kind == "reverse", PointEntry.points < 0),
    )
    awarded = session.scalar(
        sa.select(sa.func.coalesce(sa.func.sum(PointEntry.points), 0))
        .where(PointEntry.account_id.in_(accounts), PointEntry.created_at >= year_start)
        .where(awarded_line)
    )
    if awarded + points > cap:
        raise _CapRefused(profile.id, points, int(awarded), cap)


# --- operations -------------------------------------------------------------------------------


def eligible_amount(items) -> int:
    """Fen spent on products that earn points: never prescription (Rx) drugs."""
    if not isinstance(items, list) or not 1 <= len(items) <= 200:
        raise ValidationFailed("items must list the order's lines (1 to 200)", "items")
    known = classify([i.get("product_code", "") for i in items if isinstance(i, dict)])
    total = 0
    for n, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValidationFailed(f"items.{n} must be an object", f"items.{n}")
        amount = to_fen(item.get("amount"), f"items.{n}.amount", allow_zero=True)
        product = known.get(str(item.get("product_code", "")))
        rx = item.get("rx")
        if product is None and not isinstance(rx, bool):
            raise ValidationFailed(
                f"items.{n}.rx (true/false) is required for products not in the catalogue",
                f"items.{n}.rx",
            )
        if not (product.product_class == "rx" if product else rx):
            total += amount
    return total


def earn_purchase(
    actor: PartnerActor, profile_id: int, order_id: str, store_code: str, items, key=None
) -> PointsResult:
    """Points for a purchase at a partner store, once per order (or idempotency key)."""
    require(actor, "partner:api")
    order_id = _key(order_id, "order_id")[:64]
    key = _key(key) if key else f"earn:{order_id}"
    store_code = require_store(actor.partner_id, store_code)
    spent = eligible_amount(items)
    points = spent * setting("LOYALTY_POINTS_PER_YUAN") // 100

    def body(session, profile, account):
        if profile.kind != "patient":
            raise ValidationFailed("purchase points are for patients only", "member")
        entry = post(
            session, account, "earn", points, f"partner:{actor.partner_id}", key, actor,
            partner_id=actor.partner_id, store_code=store_code, order_id=order_id,
            rule="purchase", amount=spent, expires_at=expiry(),
        )  # fmt: skip
        add_lot(session, account, entry, entry.expires_at)
        return entry

    return _run(actor, profile_id, f"partner:{actor.partner_id}", key, "earn", body)


def earn_action(actor: Actor, profile_id: int, action: str, key: str) -> PointsResult:
    """Points for a completed action (quiz, CME module …); doctors only for educational ones."""
    require(actor, "loyalty:points")
    key = _key(key)
    table = setting("LOYALTY_ACTION_POINTS")
    if action not in table:
        raise ValidationFailed(f"action must be one of {', '.join(sorted(table))}", "action")
    points = table[action]

    def body(session, profile, account):
        if profile.kind == "hcp" and action not in setting("LOYALTY_HCP_ACTIONS"):
            raise ValidationFailed(f"doctors earn no points for '{action}'", "action")
        _check_hcp_cap(session, profile, account, points)
        entry = post(
            session, account, "earn", points, "staff", key, actor,
            rule=f"action:{action}", expires_at=expiry(),
        )  # fmt: skip
        add_lot(session, account, entry, entry.expires_at)
        return entry

    return _run(actor, profile_id, "staff", key, "earn", body)


def adjust(actor: Actor, profile_id: int, points: int, reason: str, key: str) -> PointsResult:
    """A manual correction with a reason; it cannot take the balance below zero."""
    require(actor, "loyalty:points")
    key, points = _key(key), _points(points, signed=True)
    reason = (reason or "").strip()
    if not reason or len(reason) > 200:
        raise ValidationFailed("reason is required (at most 200 characters)", "reason")

    def body(session, profile, account):
        _check_hcp_cap(session, profile, account, points)
        if points < 0 and account.balance + points < 0:
            raise Conflict(f"insufficient points: the balance is {account.balance}", "points")
        entry = post(
            session, account, "adjust", points, "staff", key, actor,
            reason=reason, rule="manual", expires_at=expiry() if points > 0 else None,
        )  # fmt: skip
        if points > 0:
            add_lot(session, account, entry, entry.expires_at)
        else:
            take(session, account, -points)
        return entry

    return _run(actor, profile_id, "staff", key, "adjust", body)


def burn(
    actor: PartnerActor, profile_id: int, points: int, order_id: str, store_code: str, key=None
) -> PointsResult:
    """Spend points on an order at a partner store; never more than the balance."""
    require(actor, "partner:api")
    points = _points(points)
    order_id = _key(order_id, "order_id")[:64]
    key = _key(key) if key else f"burn:{order_id}"
    store_code = require_store(actor.partner_id, store_code)

    def body(session, profile, account):
        if profile.kind != "patient":
            raise ValidationFailed("doctors' points cannot be spent at pharmacies", "member")
        if account.balance < points:
            raise Conflict(
                f"insufficient points: the balance is {account.balance}, {points} requested",
                "points",
            )
        take(session, account, points)
        return post(
            session, account, "burn", -points, f"partner:{actor.partner_id}", key, actor,
            partner_id=actor.partner_id, store_code=store_code, order_id=order_id, rule="redeem",
        )  # fmt: skip

    return _run(actor, profile_id, f"partner:{actor.partner_id}", key, "burn", body)


def reverse(actor: Actor, entry_id: int, key: str, reason: str = "") -> PointsResult:
    """Undo an earn (a return) or a burn (a cancelled order); partners only their own."""
    partner_id = getattr(actor, "partner_id", None)
    require(actor, "partner:api" if partner_id else "loyalty:points")
    key = _key(key)
    scope = f"partner:{partner_id}" if partner_id else "staff"
    original = db.session.get(PointEntry, entry_id)
    if original is None or (partner_id and original.partner_id != partner_id):
        raise NotFound("no such points entry", "entry_id")
    if original.kind not in ("earn", "burn"):
        raise ValidationFailed("only earn and burn entries can be reversed", "entry_id")
    profile_id = db.session.get(PointAccount, original.account_id).profile_id

    def body(session, profile, account):
        already = session.scalar(sa.select(PointEntry.id).where(PointEntry.reverses_id == entry_id))
        if already is not None:
            raise Conflict("the entry is already reversed", "entry_id")
        points = -original.points
        if points < 0 and account.balance + points < 0:
            raise Conflict(
                f"cannot reverse: only {account.balance} of the {-points} points are left",
                "entry_id",
            )
        entry = post(
            session, account, "reverse", points, scope, key, actor,
            reverses_id=original.id, partner_id=original.partner_id,
            order_id=original.order_id, reason=(reason or "")[:200],
            expires_at=expiry() if points > 0 else None,
        )  # fmt: skip
        if points > 0:
            add_lot(session, account, entry, entry.expires_at)
        else:
            take(session, account, -points, first_entry_id=original.id)
        return entry

    return _run(actor, profile_id, scope, key, "reverse", body)
