"""Reading the points ledger (balances, history), FIFO expiry, and the reconciliation report."""

from __future__ import annotations

import sqlalchemy as sa

from cdp import audit
from cdp.actors import Actor
from cdp.db import db, transaction, utcnow
from cdp.loyalty.common import begin_write, emit_events, hand_off, record_change
from cdp.models.loyalty import PointAccount, PointEntry, PointLot
from cdp.profiles import profile_family


def _accounts_of(profile_id: int):
    return sa.select(PointAccount.id).where(PointAccount.profile_id.in_(profile_family(profile_id)))


def balance(profile_id: int) -> int:
    """The points of a live profile (accounts of profiles merged into it count too)."""
    total = db.session.scalar(
        sa.select(sa.func.coalesce(sa.func.sum(PointAccount.balance), 0)).where(
            PointAccount.id.in_(_accounts_of(profile_id))
        )
    )
    return int(total)


def expiring(profile_id: int) -> tuple[int, object]:
    """(points, when) of the next lot to expire, or (0, None)."""
    row = db.session.execute(
        sa.select(PointLot.expires_at, sa.func.sum(PointLot.remaining))
        .where(PointLot.account_id.in_(_accounts_of(profile_id)), PointLot.remaining > 0)
        .where(PointLot.expires_at.is_not(None))
        .group_by(PointLot.expires_at)
        .order_by(PointLot.expires_at)
        .limit(1)
    ).first()
    return (int(row[1]), row[0]) if row else (0, None)


def history(profile_id: int, before_id: int | None = None, limit: int = 50) -> list[PointEntry]:
    """Ledger lines of a profile, newest first (keyset-paged on id)."""
    query = (
        sa.select(PointEntry)
        .where(PointEntry.account_id.in_(_accounts_of(profile_id)))
        .order_by(PointEntry.id.desc())
        .limit(limit)
    )
    if before_id:
        query = query.where(PointEntry.id < before_id)
    return list(db.session.scalars(query))


def expire_points(actor: Actor, batch: int = 200) -> int:
    """Expire unspent points past their date, oldest lots first; returns the points expired."""
    total = 0
    while True:
        now = utcnow()
        account_ids = list(
            db.session.scalars(
                sa.select(PointLot.account_id)
                .where(PointLot.remaining > 0, PointLot.expires_at <= now)
                .distinct()
                .limit(batch)
            )
        )
        db.session.rollback()
        if not account_ids:
            return total
        for account_id in account_ids:
            total += _expire_account(actor, account_id, now)


def _expire_account(actor: Actor, account_id: int, now) -> int:
    with transaction() as session:
        begin_write(session)
        account = session.scalars(
            sa.select(PointAccount)
            .where(PointAccount.id == account_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).one()
        lots = list(
            session.scalars(
                sa.select(PointLot)
                .where(PointLot.account_id == account.id, PointLot.remaining > 0)
                .where(PointLot.expires_at <= now)
                .order_by(PointLot.id)
            )
        )
        points = sum(lot.remaining for lot in lots)
        if not points:
            return 0
        for lot in lots:
            lot.remaining = 0
        balance_after = account.balance - points
        entry = PointEntry(
            account_id=account.id,
            kind="expire",
            points=-points,
            balance_after=balance_after,
            scope="system",
            idempotency_key=f"expire:{account.id}:{lots[0].id}-{lots[-1].id}:{len(lots)}",
            rule="expiry",
            actor=actor.audit_id or actor.kind,
        )
        session.add(entry)
        account.balance, account.updated_at = balance_after, now
        session.flush()
        outbox = emit_events(
            [
                {
                    "profile_id": account.profile_id,
                    "name": "points_expired",
                    "message_id": f"points:{entry.id}",
                    "properties": {
                        "entry_id": entry.id,
                        "points": -points,
                        "balance": balance_after,
                    },
                }
            ]
        )
        record_change(
            account.profile_id,
            "points",
            {"balance": balance_after, "delta": -points, "entry": "expire"},
        )
        audit.record(actor, "points.expire", "profile", account.profile_id, points=-points)
    hand_off(outbox)
    return points


def reconciliation(limit: int = 100) -> dict:
    """Balances checked against the ledger and the lots, with totals by kind and partner.

    ``mismatches`` lists accounts whose balance differs from the sum of their ledger lines
    or of their unspent lots; it is empty unless something bypassed the ledger.
    """
    ledger = (
        sa.select(PointEntry.account_id, sa.func.sum(PointEntry.points).label("total"))
        .group_by(PointEntry.account_id)
        .subquery()
    )
    lots = (
        sa.select(PointLot.account_id, sa.func.sum(PointLot.remaining).label("total"))
        .group_by(PointLot.account_id)
        .subquery()
    )
    ledger_total = sa.func.coalesce(ledger.c.total, 0)
    lots_total = sa.func.coalesce(lots.c.total, 0)
    mismatches = [
        {"account_id": a, "profile_id": p, "balance": b, "ledger": int(lt), "lots": int(lo)}
        for a, p, b, lt, lo in db.session.execute(
            sa.select(
                PointAccount.id, PointAccount.profile_id, PointAccount.balance, ledger_total,
                lots_total,
            )
            .outerjoin(ledger, ledger.c.account_id == PointAccount.id)
            .outerjoin(lots, lots.c.account_id == PointAccount.id)
            .where(sa.or_(PointAccount.balance != ledger_total, PointAccount.balance != lots_total))
            .order_by(PointAccount.id)
            .limit(limit)
        )
    ]  # fmt: skip
    accounts, outstanding, negative = db.session.execute(
        sa.select(
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(PointAccount.balance), 0),
            sa.func.count().filter(PointAccount.balance < 0),
        )
    ).one()
    by_kind = {
        kind: {"entries": n, "points": int(p)}
        for kind, n, p in db.session.execute(
            sa.select(PointEntry.kind, sa.func.count(), sa.func.sum(PointEntry.points)).group_by(
                PointEntry.kind
            )
        )
    }
    by_partner = [
        {"partner_id": pid, "kind": kind, "entries": n, "points": int(p)}
        for pid, kind, n, p in db.session.execute(
            sa.select(
                PointEntry.partner_id,
                PointEntry.kind,
                sa.func.count(),
                sa.func.sum(PointEntry.points),
            )
            .where(PointEntry.partner_id.is_not(None))
            .group_by(PointEntry.partner_id, PointEntry.kind)
            .order_by(PointEntry.partner_id, PointEntry.kind)
        )
    ]
    return {
        "checked_at": utcnow(),
        "accounts": accounts,
        "outstanding": int(outstanding),
        "negative_balances": negative,
        "mismatches": mismatches,
        "by_kind": by_kind,
        "by_partner": by_partner,
        "ok": not mismatches and not negative,
    }
