"""Settling redemptions in batches: their profile events, partner changes and audit record.

A redemption at the till writes only what decides it: the guarded coupon update and the
redemption row. What follows from the row (the ``coupon_redeemed`` event on the profile,
the ``coupon_redeemed`` change in the partners' feed and the audit record) is written
by ``settle_redemptions`` for every redemption after the last settled one, in one
transaction per batch, so each is written exactly once and the till's transaction stays
short (it no longer waits for the audit chain's lock either).

* The cursor is the audit log itself: each batch appends one ``coupon.redeem`` row whose
  details hold the first and last redemption id, the count, and a SHA-256 over the
  batch's redemption rows, so a redemption edited afterwards no longer matches its
  audited digest (``verify_redemptions``).
* On PostgreSQL a batch first locks the redemptions table (SHARE ROW EXCLUSIVE): that
  waits for every redemption still being written, so no id below the batch's last one
  can commit later (sequence ids commit out of order), and two batches never overlap.
  SQLite's single writer gives both by itself.

The loyalty-events job (every 2 s, and kicked after redemptions) settles, then hands the
events to the processors; voiding settles first, so a void's event follows the
redemption's.
"""

from __future__ import annotations

import hashlib
import threading

import orjson
import sqlalchemy as sa

from cdp import audit
from cdp.actors import Actor
from cdp.db import db, transaction, utcnow
from cdp.loyalty.common import begin_write, emit_events, is_postgres, tx_seq_expression
from cdp.loyalty.coupons import coupon_event
from cdp.models import AuditEntry, Identity
from cdp.models.loyalty import Coupon, CouponCampaign, MemberChange, Partner, Redemption

ACTION = "coupon.redeem"
BATCH = 1000
SETTLE_ACTOR = Actor.system("loyalty-redemptions")
# Per database: redemptions up to this id are known settled, so an idle job costs one query.
_settled: dict[str, int] = {}
_settled_lock = threading.Lock()


def _cursor(session) -> int:
    details = session.scalar(
        sa.select(AuditEntry.details)
        .where(AuditEntry.action == ACTION)
        .order_by(AuditEntry.id.desc())
        .limit(1)
    )
    details = details or {}
    # Rows written before batching audited one redemption each.
    return int(details.get("last") or details.get("redemption") or 0)


def digest(redemptions) -> str:
    """SHA-256 over the fields of redemptions that never change (voiding keeps them)."""
    payload = orjson.dumps(
        [
            [r.id, r.coupon_id, r.partner_id, r.store_code, r.order_id, r.amount, r.discount,
             r.redeemed_at.isoformat()]
            for r in redemptions
        ]
    )  # fmt: skip
    return hashlib.sha256(payload).hexdigest()


def settle_redemptions(actor: Actor = SETTLE_ACTOR, batch: int = BATCH) -> int:
    """Write the events, feed changes and audit row of every unsettled redemption."""
    database = str(db.engine.url)
    newest = db.session.scalar(sa.select(sa.func.max(Redemption.id))) or 0
    db.session.rollback()
    if newest <= _settled.get(database, 0):
        return 0
    total = 0
    while True:
        done, upto = _settle_batch(actor, batch)
        total += done
        with _settled_lock:
            _settled[database] = max(_settled.get(database, 0), upto)
        if done < batch:
            return total


def _settle_batch(actor: Actor, batch: int) -> tuple[int, int]:
    with transaction() as session:
        begin_write(session)
        if is_postgres(session):
            session.execute(sa.text("LOCK TABLE loyalty_redemptions IN SHARE ROW EXCLUSIVE MODE"))
        after = _cursor(session)
        rows = session.execute(
            sa.select(Redemption, Coupon, CouponCampaign)
            .join(Coupon, Coupon.id == Redemption.coupon_id)
            .join(CouponCampaign, CouponCampaign.id == Redemption.campaign_id)
            .where(Redemption.id > after)
            .order_by(Redemption.id)
            .limit(batch)
        ).all()
        if not rows:
            return 0, after
        events = []
        for redemption, coupon, campaign in rows:
            event = coupon_event(
                coupon, campaign, "coupon_redeemed", str(redemption.id),
                partner_id=redemption.partner_id, store_code=redemption.store_code,
                amount=redemption.amount, discount=redemption.discount,
            )  # fmt: skip
            events.append({**event, "at": redemption.redeemed_at})
        emit_events(events)
        _feed(session, [(coupon.profile_id, coupon.id) for _, coupon, _ in rows])
        redemptions = [r for r, _, _ in rows]
        audit.record(
            actor, ACTION, "redemption", None, first=redemptions[0].id,
            last=redemptions[-1].id, count=len(redemptions), sha256=digest(redemptions),
        )  # fmt: skip
        return len(rows), redemptions[-1].id


def _feed(session, coupons: list[tuple[int, int]]) -> None:
    """A ``coupon_redeemed`` change for each card the coupons' profiles hold."""
    profile_ids = sorted({profile_id for profile_id, _ in coupons})
    cards: dict[int, list[tuple[int, str]]] = {}
    for profile_id, partner_id, card in session.execute(
        sa.select(Identity.profile_id, Partner.id, Identity.value_index)
        .join(Partner, Partner.code == Identity.namespace)
        .where(Identity.type == "pharmacy_member", Identity.profile_id.in_(profile_ids))
    ):
        cards.setdefault(profile_id, []).append((partner_id, card))
    now = utcnow()
    rows = [
        {"partner_id": partner_id, "card_no": card, "kind": "coupon_redeemed",
         "data": {"coupon_id": coupon_id}, "created_at": now}
        for profile_id, coupon_id in coupons
        for partner_id, card in cards.get(profile_id, ())
    ]  # fmt: skip
    if rows:
        dialect = session.get_bind().dialect.name
        statement = sa.insert(MemberChange.__table__).values(tx_seq=tx_seq_expression(dialect))
        session.execute(statement, rows)


def verify_redemptions(limit: int = 1000) -> list[int]:
    """Ids of the latest ``coupon.redeem`` audit rows whose redemptions no longer match.

    A redemption deleted with an erased person's data shows here too.
    """
    broken = []
    entries = db.session.scalars(
        sa.select(AuditEntry)
        .where(AuditEntry.action == ACTION, AuditEntry.object_type == "redemption")
        .order_by(AuditEntry.id.desc())
        .limit(limit)
    )
    for entry in entries:
        first, last = entry.details["first"], entry.details["last"]
        rows = db.session.scalars(
            sa.select(Redemption).where(Redemption.id.between(first, last)).order_by(Redemption.id)
        ).all()
        if len(rows) != entry.details["count"] or digest(rows) != entry.details["sha256"]:
            broken.append(entry.id)
    return broken
