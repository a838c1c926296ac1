"""Declarative base, column types shared by every model, and the unit-of-work helper."""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# JSONB on PostgreSQL (indexable, compact), plain JSON text elsewhere.
JSONType = sa.JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a real bigint.
BigIntPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


db = SQLAlchemy(model_class=Base)


def utcnow() -> datetime:
    """Timezone-aware current UTC time (stored as UTC, shown in CDP_TIMEZONE)."""
    return datetime.now(UTC)


class UTCDateTime(sa.types.TypeDecorator):
    """A timestamp stored as UTC and always returned timezone-aware, on every backend."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; pass an aware datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def bind_processor(self, dialect):
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        # The text SQLite's DATETIME type would write ("YYYY-MM-DD HH:MM:SS.ffffff"), made in
        # one C call: ingestion binds several timestamps per event.
        def process(value):
            if value is None:
                return None
            if value.tzinfo is None:
                raise ValueError("naive datetime given; pass an aware datetime")
            if value.tzinfo is not UTC:
                value = value.astimezone(UTC)
            return value.replace(tzinfo=None).isoformat(" ", "microseconds")

        return process

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@contextmanager
def transaction() -> Iterator[sa.orm.Session]:
    """Run a unit of work: commit when the block ends, roll back if it raises."""
    session = db.session
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise


def lock_for_writing(session: sa.orm.Session, wait_ms: int) -> None:
    """Start the session's transaction by taking SQLite's write lock (no-op elsewhere).

    Python's sqlite3 sends BEGIN only before the first INSERT/UPDATE/DELETE, so the reads
    of a read-then-write unit of work run outside its transaction: another writer can
    commit in between, and ours then writes from stale reads. BEGIN IMMEDIATE takes the
    lock first, making the unit of work serialisable. Waits at most ``wait_ms`` for a lock
    another writer holds (raising OperationalError "database is locked" after that), then
    restores the connection's usual busy timeout. Only for callers that will write anyway:
    a read-only request must not queue behind writers.
    """
    connection = session.connection()
    if connection.dialect.name != "sqlite":
        return
    if connection.connection.driver_connection.in_transaction:
        return  # a write already ran in this transaction, so SQLite holds the lock
    usual = connection.info.get("cdp.busy_timeout")  # per DBAPI connection, read once
    if usual is None:
        usual = connection.info["cdp.busy_timeout"] = connection.exec_driver_sql(
            "PRAGMA busy_timeout"
        ).scalar()
    connection.exec_driver_sql(f"PRAGMA busy_timeout = {int(wait_ms)}")
    try:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    finally:
        connection.exec_driver_sql(f"PRAGMA busy_timeout = {int(usual)}")


# lock_names: at most FINE_LOCKS names get a lock each; beyond that, whole buckets are locked.
FINE_LOCKS = 64
BUCKETS = 64
_BUCKET_SPACE = 0x43445031  # "CDP1": first key of the (int, int) advisory locks on buckets
_LOCK_BUCKETS = sa.text(
    "SELECT pg_advisory_xact_lock(:space, b) FROM unnest(CAST(:buckets AS integer[])) AS b"
)
_SHARE_BUCKETS = sa.text(
    "SELECT pg_advisory_xact_lock_shared(:space, b) FROM unnest(CAST(:buckets AS integer[])) AS b"
)
_LOCK_NAMES = sa.text("SELECT pg_advisory_xact_lock(k) FROM unnest(CAST(:keys AS bigint[])) AS k")


def _name_hash(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), signed=True)


def lock_names(connection: sa.Connection, names: Collection[str]) -> None:
    """PostgreSQL: hold advisory locks on ``names`` until the transaction ends (no-op elsewhere).

    Lock-table space is bounded (PostgreSQL shares max_locks_per_transaction x connections
    slots), so a call takes at most FINE_LOCKS + BUCKETS locks: each name's own lock plus a
    shared lock on its bucket, or, for more names, its buckets exclusively. Either way two
    transactions locking the same name exclude each other. Locks are taken in one order
    (buckets, then names, each sorted; unnest keeps array order), so callers cannot deadlock
    among themselves.
    """
    if connection.dialect.name != "postgresql" or not names:
        return
    hashes = sorted({_name_hash(name) for name in names})
    buckets = sorted({h % BUCKETS for h in hashes})
    if len(hashes) > FINE_LOCKS:
        connection.execute(_LOCK_BUCKETS, {"space": _BUCKET_SPACE, "buckets": buckets}).all()
        return
    connection.execute(_SHARE_BUCKETS, {"space": _BUCKET_SPACE, "buckets": buckets}).all()
    connection.execute(_LOCK_NAMES, {"keys": hashes}).all()


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets readers run beside the single writer; NORMAL is crash-safe in WAL mode.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def init_app(app) -> None:
    """Bind the database to the app and tune SQLite connections."""
    db.init_app(app)
    with app.app_context():
        engine = db.engine
        if engine.dialect.name == "sqlite":
            sa.event.listen(engine, "connect", _sqlite_pragmas)
