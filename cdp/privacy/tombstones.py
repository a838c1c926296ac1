"""Tombstones: what stays of an erased person, so their identifiers do not come back.

A tombstone is a keyed hash of one identifier with its own derivation, unrelated to the
blind indexes the identity graph uses. Ingestion asks ``suppressed_many`` once per batch
(or ``suppressed`` per event) which events to drop. An event that itself carries a fresh
consent grant (the person signed up again) is let through, and ``lift_tombstones`` of its
identifiers in the storing transaction lets their later events through too.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from cdp.db import db, utcnow
from cdp.identity.types import Identifier
from cdp.models.privacy import Tombstone
from cdp.pii import PiiVault, vault

RECONSENT_EVENTS = frozenset({"consent_granted", "signup", "sign_up", "registered"})


def tombstone_hash(type_: str, namespace: str, value: str, pii_vault: PiiVault | None = None):
    return (pii_vault or vault()).blind_index(f"tombstone:{type_}:{namespace}", value)


def add_tombstones(identifiers: Iterable[tuple[str, str, str]], request_id: int | None) -> int:
    """Record (type, namespace, value) triples in the caller's transaction; return how many."""
    rows = {
        (type_, tombstone_hash(type_, namespace, value))
        for type_, namespace, value in identifiers
        if value
    }
    if not rows:
        return 0
    dialect = db.session.get_bind().dialect.name
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(Tombstone)
    db.session.execute(
        insert.on_conflict_do_nothing(index_elements=["identifier_type", "value_hash"]),
        [
            {
                "identifier_type": t,
                "value_hash": h,
                "request_id": request_id,
                "created_at": utcnow(),
            }
            for t, h in sorted(rows)
        ],
    )
    return len(rows)


def any_tombstones() -> bool:
    """Cheap check a batch can make once before asking about each event."""
    return db.session.scalar(sa.select(Tombstone.id).limit(1)) is not None


def _pairs(identifiers: list[Identifier]) -> list[tuple[str, str]]:
    return [(i.type, tombstone_hash(i.type, i.namespace, i.value)) for i in identifiers]


# One type at a time: SQLite answers a row-value IN over (type, hash) by scanning the table,
# and "type = ? AND hash IN (...)" through the unique index. Built once.
_HASHES_OF_TYPE = sa.select(Tombstone.value_hash).where(
    Tombstone.identifier_type == sa.bindparam("b_type"),
    Tombstone.value_hash.in_(sa.bindparam("b_hashes", expanding=True)),
)


def _tombstoned(pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
    by_type: dict[str, list[str]] = {}
    for type_, value_hash in pairs:
        by_type.setdefault(type_, []).append(value_hash)
    found: set[tuple[str, str]] = set()
    for type_, hashes in by_type.items():
        hashes = sorted(set(hashes))
        for start in range(0, len(hashes), 500):
            params = {"b_type": type_, "b_hashes": hashes[start : start + 500]}
            found |= {(type_, h) for h in db.session.scalars(_HASHES_OF_TYPE, params)}
    return found


def carries_reconsent(message: dict | None) -> bool:
    """Whether an event is the person opting in again (a consent grant, or signing up)."""
    if not isinstance(message, dict):
        return False
    if (message.get("event") or message.get("name")) in RECONSENT_EVENTS:
        return True
    traits = {
        **((message.get("context") or {}).get("traits") or {}),
        **(message.get("traits") or {}),
    }
    for consents in (traits.get("consents"), (message.get("properties") or {}).get("consents")):
        if isinstance(consents, dict) and any(v is True for v in consents.values()):
            return True
    return False


def suppressed_many(items: list[tuple[list[Identifier], dict | None]]) -> set[int]:
    """Indexes of the (identifiers, message) items to drop, with one query for the batch.

    An item is dropped when one of its identifiers belongs to an erased person and its
    message does not re-consent. Read-only: lift the tombstones of re-consenting events
    with ``lift_tombstones`` in the transaction that stores them.
    """
    pairs = [_pairs(identifiers) for identifiers, _message in items]
    hits = _tombstoned([p for group in pairs for p in group])
    if not hits:
        return set()
    return {
        index
        for index, (group, (_ids, message)) in enumerate(zip(pairs, items, strict=True))
        if hits.intersection(group) and not carries_reconsent(message)
    }


def filter_batch(candidates: list) -> tuple[list, int]:
    """The ingestion hook: drop the candidates of erased people; return (kept, dropped).

    ``candidates`` have ``.identifiers`` and ``.message`` (cdp.ingest.messages.Candidate).
    A candidate that re-consents is kept and its identifiers' tombstones are deleted in the
    caller's (the batch's) transaction. One SELECT per batch; a DELETE only on a re-consent.
    """
    if not candidates or not any_tombstones():  # nobody was ever erased: skip the hashing
        return candidates, 0
    pairs = [_pairs(c.identifiers) for c in candidates]
    hits = _tombstoned([p for group in pairs for p in group])
    if not hits:
        return candidates, 0
    kept, lift = [], set()
    for candidate, group in zip(candidates, pairs, strict=True):
        hit = hits.intersection(group)
        if not hit:
            kept.append(candidate)
        elif carries_reconsent(candidate.message):
            kept.append(candidate)
            lift |= hit
    if lift:
        db.session.execute(
            sa.delete(Tombstone).where(
                sa.tuple_(Tombstone.identifier_type, Tombstone.value_hash).in_(sorted(lift))
            )
        )
    return kept, len(candidates) - len(kept)


def suppressed(identifiers: list[Identifier], message: dict | None = None) -> bool:
    """True when an event carries an erased person's identifier and must be dropped."""
    return bool(identifiers) and bool(suppressed_many([(identifiers, message)]))


def lift_tombstones(identifiers: list[Identifier]) -> int:
    """Forget the tombstones of these identifiers (the person consented again); caller commits."""
    if not identifiers:
        return 0
    return db.session.execute(
        sa.delete(Tombstone).where(
            sa.tuple_(Tombstone.identifier_type, Tombstone.value_hash).in_(_pairs(identifiers))
        )
    ).rowcount
