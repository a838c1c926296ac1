"""Points accounts and lots: the locked balance row, ledger lines, FIFO spending.

The balance of an account equals the sum of its ledger lines and of its unspent lots;
every helper here runs inside the caller's transaction with the account row locked.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa

from cdp.actors import Actor
from cdp.db import utcnow
from cdp.exceptions import Conflict
from cdp.loyalty.common import dialect_insert, setting
from cdp.models import Profile
from cdp.models.loyalty import PointAccount, PointEntry, PointLot
from cdp.profiles import profile_family


def locked_accounts(session, profile_ids: list[int]) -> list[PointAccount]:
    return list(
        session.scalars(
            sa.select(PointAccount)
            .where(PointAccount.profile_id.in_(profile_ids))
            .order_by(PointAccount.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    )


def lock_account(session, profile: Profile, actor: Actor) -> PointAccount:
    """The profile's account, locked; accounts of profiles merged into it are folded in."""
    family = profile_family(profile.id)
    accounts = locked_accounts(session, family)
    if not any(a.profile_id == profile.id for a in accounts):
        now = utcnow()
        session.execute(
            dialect_insert(PointAccount)
            .values(profile_id=profile.id, balance=0, created_at=now, updated_at=now)
            .on_conflict_do_nothing(index_elements=["profile_id"])
        )
        accounts = locked_accounts(session, family)
    main = next(a for a in accounts if a.profile_id == profile.id)
    for other in accounts:
        if other is main or other.merged_into_id is not None:
            continue
        moved = other.balance
        if moved:
            tag = f"merge:{other.id}->{main.id}"
            post(session, other, "adjust", -moved, "system", tag, actor, rule="merge")
            post(session, main, "adjust", moved, "system", tag + ":in", actor, rule="merge")
        session.execute(
            sa.update(PointLot).where(PointLot.account_id == other.id).values(account_id=main.id)
        )
        other.merged_into_id = main.id
    return main


def post(session, account, kind, points, scope, key, actor, **fields) -> PointEntry:
    balance = account.balance + points
    if balance < 0:
        raise Conflict(f"insufficient points: the balance is {account.balance}", "points")
    entry = PointEntry(
        account_id=account.id,
        kind=kind,
        points=points,
        balance_after=balance,
        scope=scope,
        idempotency_key=key,
        actor=actor.audit_id or actor.kind,
        **fields,
    )
    session.add(entry)
    account.balance, account.updated_at = balance, utcnow()
    session.flush()
    return entry


def add_lot(session, account, entry, expires_at) -> None:
    if entry.points > 0:
        session.add(
            PointLot(
                account_id=account.id,
                entry_id=entry.id,
                remaining=entry.points,
                expires_at=expires_at,
            )
        )


def take(session, account, points: int, first_entry_id: int | None = None) -> None:
    """Spend ``points`` from the account's lots: one earn's own lot first, then oldest first."""
    order = [sa.nulls_last(PointLot.expires_at), PointLot.id]
    if first_entry_id is not None:
        order.insert(0, sa.case((PointLot.entry_id == first_entry_id, 0), else_=1))
    need = points
    for lot in session.scalars(
        sa.select(PointLot)
        .where(PointLot.account_id == account.id, PointLot.remaining > 0)
        .order_by(*order)
    ):
        take = min(lot.remaining, need)
        lot.remaining -= take
        need -= take
        if need == 0:
            break
    if need:
        raise RuntimeError(f"points account {account.id}: lots hold less than the balance")


def expiry() -> datetime:
    return utcnow() + timedelta(days=setting("LOYALTY_POINTS_EXPIRY_DAYS"))
