"""Delivery receipts: WeChat ``TEMPLATESENDJOBFINISH`` and SMS status reports update the outbox.

Registered as an ingest event processor (``process_events(event_ids, profile_ids)``). The
connectors store receipts as canonical events:

- ``template_delivery`` (``connectors/wechat_events.py``): ``msg_id``, ``status``
  (``success`` / ``failed:user block`` / ``failed: system failed``);
- ``sms_delivery_report`` (``connectors/sms_reports.py``): ``biz_id``, ``out_id`` (our
  delivery key), ``delivered``, ``err_code``, ``err_msg``.

A receipt finds its Delivery by (channel, provider_id), or for SMS also by the key the
gateway echoes back (so a report that overtakes the recording of the BizId still lands).
Success sets ``delivered`` + ``delivered_at``; failure sets ``failed`` + a reason. A
delivered row is never downgraded, failures are applied before successes, and re-running a
batch changes nothing: the processor is idempotent. A WeChat "user block" also marks the
profile unreachable on WeChat, since later sends would be accepted and silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from cdp.db import db, utcnow
from cdp.models import Event
from journeys.models import ChannelUnreachable, Delivery

RECEIPT_EVENTS = ("template_delivery", "sms_delivery_report")
# Rows a receipt may move: anything the provider has (or may have) got, except delivered.
OPEN = ("sending", "sent", "uncertain", "failed")
CHUNK = 1000
_DELIVERIES = Delivery.__table__


@dataclass(frozen=True)
class Receipt:
    channel: str
    provider_id: str
    key: str  # "" when the receipt does not carry our key
    delivered: bool
    at: datetime
    reason: str | None = None
    detail: str = ""


def _wechat(props: dict, at: datetime) -> Receipt | None:
    msg_id = str(props.get("msg_id") or "")
    if not msg_id:
        return None
    status = str(props.get("status") or "")
    delivered = status == "success"
    reason = None if delivered else ("user_blocked" if "block" in status else "not_delivered")
    return Receipt("wechat", msg_id, "", delivered, at, reason, status[:200])


def _sms(props: dict, at: datetime) -> Receipt | None:
    biz_id, out_id = str(props.get("biz_id") or ""), str(props.get("out_id") or "")
    if not biz_id and not out_id:
        return None
    delivered = props.get("delivered") is True
    detail = "" if delivered else f"{props.get('err_code') or ''}: {props.get('err_msg') or ''}"
    return Receipt(
        "sms", biz_id, out_id, delivered, at, None if delivered else "not_delivered", detail[:200]
    )


PARSERS = {"template_delivery": _wechat, "sms_delivery_report": _sms}


def receipts_in(event_ids: list[int]) -> list[Receipt]:
    """The receipts among the events ``event_ids`` (others are ignored)."""
    found = []
    for start in range(0, len(event_ids), CHUNK):
        rows = db.session.execute(
            sa.select(Event.name, Event.properties, Event.timestamp).where(
                Event.id.in_(event_ids[start : start + CHUNK]), Event.name.in_(RECEIPT_EVENTS)
            )
        )
        for name, props, at in rows:
            receipt = PARSERS[name](props or {}, at)
            if receipt is not None:
                found.append(receipt)
    return found


def _matches():
    return sa.and_(
        _DELIVERIES.c.channel == sa.bindparam("b_channel"),
        sa.or_(
            _DELIVERIES.c.provider_id == sa.bindparam("b_provider_id"),
            _DELIVERIES.c.key == sa.bindparam("b_key"),
        ),
        # Equalities, not IN: an expanding IN list cannot be used with executemany.
        sa.or_(*(_DELIVERIES.c.status == status for status in OPEN)),
    )


def _params(receipt: Receipt, **values) -> dict:
    return {
        "b_channel": receipt.channel,
        "b_provider_id": receipt.provider_id or None,
        "b_key": receipt.key or None,  # NULL matches nothing
        **values,
    }


def apply_receipts(receipts: list[Receipt]) -> None:
    """Update the matching deliveries (two executemany statements), in the caller's transaction."""
    now = utcnow()
    failed = [r for r in receipts if not r.delivered]
    delivered = [r for r in receipts if r.delivered]
    if failed:
        db.session.execute(
            sa.update(_DELIVERIES)
            .where(_matches())
            .values(
                status="failed",
                reason=sa.bindparam("b_reason"),
                detail=sa.bindparam("b_detail"),
                updated_at=now,
            ),
            [_params(r, b_reason=r.reason, b_detail=r.detail) for r in failed],
        )
        _mark_unreachable([r for r in failed if r.reason == "user_blocked"], now)
    if delivered:
        db.session.execute(
            sa.update(_DELIVERIES)
            .where(_matches())
            .values(
                status="delivered",
                delivered_at=sa.bindparam("b_at"),
                reason=None,
                updated_at=now,
            ),
            [_params(r, b_at=r.at) for r in delivered],
        )


def _mark_unreachable(blocked: list[Receipt], now: datetime) -> None:
    if not blocked:
        return
    table = ChannelUnreachable.__table__
    dialect = db.session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    people = (
        sa.select(
            _DELIVERIES.c.profile_id,
            sa.literal("wechat"),
            sa.literal("template message receipt: user block"),
            sa.literal(now, type_=table.c.at.type),
        )
        .where(
            _DELIVERIES.c.channel == "wechat",
            _DELIVERIES.c.provider_id.in_([r.provider_id for r in blocked]),
        )
        .distinct()
    )
    db.session.execute(
        insert(table)
        .from_select(["profile_id", "channel", "reason", "at"], people)
        .on_conflict_do_nothing()
    )


def process_events(event_ids: list[int], profile_ids: list[int]) -> int:
    """Ingest event processor: apply the receipts of a committed batch; returns how many."""
    receipts = receipts_in(list(event_ids))
    if receipts:
        apply_receipts(receipts)
        db.session.commit()
    return len(receipts)
