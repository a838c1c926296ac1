"""Plumbing shared by the loyalty operations: write locks, profiles, events, member changes.

Concurrency model. Every operation that checks something and then changes it (budget,
per-profile limit, a coupon's state, a points balance) first makes its transaction the
writer of what it checks:

* PostgreSQL: ``SELECT … FOR UPDATE`` of the row that guards the invariant (the campaign,
  the points account), and guarded ``UPDATE … WHERE <still true>`` statements whose row
  count says whether this transaction won. READ COMMITTED gives each statement after the
  lock a fresh snapshot, so the checks see what the previous lock holder committed.
* SQLite: ``BEGIN IMMEDIATE`` before the first read (``begin_write``): the database has a
  single writer, so taking the write lock first orders the transactions and every read
  after it sees the latest commit (a deferred transaction would read an old snapshot and
  then fail to upgrade to a writer).
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal, InvalidOperation

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB

from cdp.db import JSONType, UTCDateTime, db, utcnow
from cdp.exceptions import NotFound, ValidationFailed
from cdp.models import Event, Identity, OutboxBatch, Profile, Source
from cdp.models.loyalty import MemberChange, Partner
from cdp.profiles import live_profile_id
from cdp.queue import enqueue

log = logging.getLogger(__name__)

LOYALTY_SOURCE_ID = "src_loyalty"
LOYALTY_SOURCE_KIND = "loyalty"


def is_postgres(session=None) -> bool:
    return (session or db.session).get_bind().dialect.name == "postgresql"


class _WriterQueue:
    """Loyalty writers of one SQLite file queue on a lock file (and a lock per process).

    SQLite's busy handler polls with growing sleeps (1, 2, 5, 10 … 100 ms), so two
    processes that keep meeting on the write lock spend most of their time asleep while
    the lock is free. Waiting on ``flock`` instead lets the kernel wake the next writer as
    soon as the previous one commits. Other writers (ingestion) still meet these on
    SQLite's own lock, which stays the guard of correctness.
    """

    def __init__(self, path: str):
        self.thread_lock = threading.RLock()  # a nested session of the same thread waits on SQLite
        self.fd = os.open(path + ".loyalty-lock", os.O_RDWR | os.O_CREAT, 0o600)

    def acquire(self) -> None:
        self.thread_lock.acquire()
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except BaseException:
            self.thread_lock.release()
            raise

    def release(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        self.thread_lock.release()


_queues: dict[tuple[int, str], _WriterQueue] = {}
_queues_lock = threading.Lock()


def _writer_queue(path: str) -> _WriterQueue:
    key = (os.getpid(), path)  # a forked worker opens its own file description
    with _queues_lock:
        if key not in _queues:
            _queues[key] = _WriterQueue(path)
        return _queues[key]


@sa.event.listens_for(sa.orm.Session, "after_transaction_end")
def _release_writer_queue(session, transaction) -> None:
    if transaction.parent is None and "loyalty_writer" in session.info:
        session.info.pop("loyalty_writer").release()


def begin_write(session=None) -> None:
    """Make the current transaction the writer now (SQLite); a no-op on PostgreSQL."""
    session = session or db.session
    conn = session.connection()
    if conn.dialect.name != "sqlite":
        return
    raw = conn.connection.driver_connection
    if raw.in_transaction:
        return
    path = conn.engine.url.database
    if path and path != ":memory:" and "loyalty_writer" not in session.info:
        queue = _writer_queue(os.path.abspath(path))
        queue.acquire()
        session.info["loyalty_writer"] = queue
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def dialect_insert(model, session=None):
    """INSERT with ``on_conflict_do_*`` for the session's backend."""
    return (postgresql.insert if is_postgres(session) else sqlite.insert)(model)


# --- profiles ---------------------------------------------------------------------------------


def live_profile(profile_id: int) -> Profile:
    """The profile that holds ``profile_id``'s data now (following merges), or NotFound."""
    live = live_profile_id(profile_id)
    profile = db.session.get(Profile, live) if live is not None else None
    if profile is None:
        raise NotFound("no such profile", "profile_id")
    return profile


def memberships(profile_id: int, partner_ids: Iterable[int] | None = None) -> list[tuple]:
    """(partner id, card no) of every partner card on a live profile."""
    query = (
        sa.select(Partner.id, Identity.value_index)
        .join(Partner, Partner.code == Identity.namespace)
        .where(Identity.type == "pharmacy_member", Identity.profile_id == profile_id)
    )
    if partner_ids:
        query = query.where(Partner.id.in_(list(partner_ids)))
    return [tuple(row) for row in db.session.execute(query)]


def is_member(profile_id: int, partner_id: int) -> bool:
    return bool(memberships(profile_id, [partner_id]))


# --- member changes ---------------------------------------------------------------------------


def tx_seq_expression(dialect_name: str):
    """The writing transaction's id on PostgreSQL; 0 on SQLite (commits are in id order)."""
    if dialect_name == "postgresql":
        return sa.text("(pg_current_xact_id()::text)::bigint")
    return sa.literal(0, sa.BigInteger)


def add_changes(rows: list[tuple[int, str]], kind: str, data: dict, connection=None) -> None:
    """Append a change for each (partner id, card no), in the caller's transaction."""
    if not rows:
        return
    executor = connection or db.session
    dialect = (connection.dialect if connection is not None else db.session.get_bind().dialect).name
    statement = sa.insert(MemberChange.__table__).values(tx_seq=tx_seq_expression(dialect))
    now = utcnow()
    executor.execute(
        statement,
        [
            {"partner_id": p, "card_no": c, "kind": kind, "data": data, "created_at": now}
            for p, c in rows
        ],
    )


def record_change(profile_id: int, kind: str, data: dict, partner_ids=None) -> None:
    """Tell every partner holding a card of this profile (optionally only some) about a change.

    One ``INSERT … SELECT`` over the profile's cards, in the caller's transaction.
    """
    postgres = is_postgres()
    now = utcnow()
    payload = sa.literal(data, JSONType)
    stamp = sa.literal(now, UTCDateTime)
    if postgres:  # a bare parameter in a select list would be text
        payload = sa.cast(payload, JSONB)
        stamp = sa.cast(stamp, sa.DateTime(timezone=True))
    cards = (
        sa.select(
            Partner.id,
            Identity.value_index,
            sa.literal(kind, sa.String),
            payload,
            tx_seq_expression("postgresql" if postgres else "sqlite"),
            stamp,
        )
        .join(Partner, Partner.code == Identity.namespace)
        .where(Identity.type == "pharmacy_member", Identity.profile_id == profile_id)
    )
    if partner_ids:
        cards = cards.where(Partner.id.in_(list(partner_ids)))
    columns = ["partner_id", "card_no", "kind", "data", "tx_seq", "created_at"]
    db.session.execute(sa.insert(MemberChange.__table__).from_select(columns, cards))


# --- events on the profile --------------------------------------------------------------------


_sources_seen: set[str] = set()  # databases whose loyalty source is known to exist


def loyalty_source_id() -> str:
    """The internal source loyalty events are stored under (created on first use)."""
    session = db.session
    database = str(session.get_bind().url)
    if database in _sources_seen:
        return LOYALTY_SOURCE_ID
    if session.get(Source, LOYALTY_SOURCE_ID) is None:
        session.execute(
            dialect_insert(Source)
            .values(
                id=LOYALTY_SOURCE_ID,
                name="Loyalty (coupons and points)",
                kind=LOYALTY_SOURCE_KIND,
                enabled=True,
                default_profile_kind="patient",
                created_at=utcnow(),
            )
            .on_conflict_do_nothing(index_elements=["id"])
        )
    else:
        _sources_seen.add(database)
    return LOYALTY_SOURCE_ID


def emit_events(events: list[dict], at: datetime | None = None) -> int | None:
    """Store events on profiles in the caller's transaction, with their outbox row.

    Each event is ``{"profile_id", "name", "message_id", "properties"}`` (and optionally
    ``at``, when it happened, if not now); the message id
    makes a retried operation store it once. Returns the outbox id to ``hand_off`` after
    the commit (journeys and segments see the events through the usual processors).
    """
    if not events:
        return None
    at = at or utcnow()
    source_id = loyalty_source_id()
    rows = [
        {
            "source_id": source_id,
            "message_id": e["message_id"],
            "profile_id": e["profile_id"],
            "type": "track",
            "name": e["name"],
            "timestamp": e.get("at") or at,
            "received_at": at,
            "properties": e.get("properties") or {},
            "context": {"channel": "loyalty"},
        }
        for e in events
    ]
    statement = dialect_insert(Event.__table__).on_conflict_do_nothing(
        index_elements=["source_id", "message_id"]
    )
    event_ids = list(db.session.scalars(statement.returning(Event.__table__.c.id), rows))
    if not event_ids:
        return None
    # enqueued_at stays empty: hand_off_events enqueues these batches in bulk after the commit.
    return db.session.scalar(
        sa.insert(OutboxBatch.__table__)
        .values(
            source_id=source_id,
            event_ids=event_ids,
            profile_ids=sorted({e["profile_id"] for e in events}),
            attempts=0,
        )
        .returning(OutboxBatch.__table__.c.id)
    )


_last_hand_off = 0.0
HAND_OFF_EVERY = 0.25  # seconds; the loyalty-events periodic job catches the tail of a burst


def hand_off(outbox_id: int | None) -> None:  # or any id of work the job picks up
    """After the commit: have the committed event batches processed (journeys, segments).

    Enqueuing one job per operation would cost more than the operation; instead a job that
    enqueues every waiting loyalty batch at once is queued at most every quarter second,
    and a periodic job (every 2 s) picks up whatever came after it.
    """
    global _last_hand_off
    if outbox_id is None or time.monotonic() - _last_hand_off < HAND_OFF_EVERY:
        return
    _last_hand_off = time.monotonic()
    try:
        enqueue("cdp.loyalty.tasks.hand_off_events", queue="ingest")
    except Exception:  # the events are committed; the periodic job and the sweeper catch up
        log.warning("loyalty: could not enqueue the event hand-off")


def pending_batches(limit: int = 5000) -> list[int]:
    """Claim loyalty event batches nobody has enqueued yet (marks them enqueued)."""
    ids = list(
        db.session.scalars(
            sa.select(OutboxBatch.id)
            .where(OutboxBatch.source_id == LOYALTY_SOURCE_ID, OutboxBatch.enqueued_at.is_(None))
            .order_by(OutboxBatch.id)
            .limit(limit)
        )
    )
    if ids:
        db.session.execute(
            sa.update(OutboxBatch)
            .where(OutboxBatch.id.in_(ids), OutboxBatch.enqueued_at.is_(None))
            .values(enqueued_at=utcnow())
        )
    db.session.commit()
    return ids


def yuan(fen: int | None) -> str | None:
    """Fen as a yuan string with two decimals ("12.50")."""
    if fen is None:
        return None
    sign = "-" if fen < 0 else ""
    return f"{sign}{abs(fen) // 100}.{abs(fen) % 100:02d}"


def to_fen(value, field: str, allow_zero: bool = False) -> int:
    """Yuan (number or string, at most two decimals) as integer fen; ValidationFailed if not."""
    if isinstance(value, bool) or value is None:
        raise ValidationFailed(f"{field} must be an amount in yuan", field)
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise ValidationFailed(f"{field} must be an amount in yuan", field) from None
    if not amount.is_finite() or amount != amount.quantize(Decimal("0.01")):
        raise ValidationFailed(f"{field} must have at most two decimals", field)
    fen = int(amount * 100)
    if fen < 0 or (fen == 0 and not allow_zero) or fen > 10**11:
        raise ValidationFailed(f"{field} must be more than 0 and a sane amount", field)
    return fen


# --- settings ---------------------------------------------------------------------------------

DEFAULTS = {
    # Purchases: points per yuan spent on eligible (non-Rx) products.
    "LOYALTY_POINTS_PER_YUAN": 1,
    # Points expire this many days after they were earned, oldest first.
    "LOYALTY_POINTS_EXPIRY_DAYS": 365,
    # Actions: points per completed action (journeys and staff award them).
    "LOYALTY_ACTION_POINTS": {
        "quiz_completed": 20,
        "survey_completed": 10,
        "refill_on_time": 30,  # a repeat purchase of an OTC medicine before it ran out
        "article_read": 2,
        "cme_module_completed": 50,
    },
    # The only actions doctors earn points for: educational engagement (anti-bribery).
    "LOYALTY_HCP_ACTIONS": ("quiz_completed", "article_read", "cme_module_completed"),
    # Points a doctor may be awarded per calendar year (CDP_TIMEZONE).
    "LOYALTY_HCP_ANNUAL_CAP": 2000,
    # A partner may void its redemption this many minutes after it.
    "LOYALTY_VOID_WINDOW_MINUTES": 24 * 60,
    # Member uploads with more rows than this run as a background job.
    "LOYALTY_SYNC_INLINE_ROWS": 2000,
}


def setting(name: str):
    """A loyalty setting from the app config, or its default."""
    return current_app.config.get(name, DEFAULTS[name])
