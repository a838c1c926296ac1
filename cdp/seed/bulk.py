"""Writing the demo generator's buffered rows: Core ``executemany`` in batches, one commit each."""

from __future__ import annotations

import time

import sqlalchemy as sa

from cdp.db import db
from cdp.models import Event, Identity, Profile, Source
from cdp.models.purchases import project_events
from cdp.seed.consents import insert_consents

INSERT_ROWS = 10_000  # rows per executemany


def taken_identities() -> set:
    # Only the low-entropy identifiers can collide with earlier data by chance.
    query = sa.select(Identity.type, Identity.namespace, Identity.value_index).where(
        Identity.type.in_(("phone", "pharmacy_member", "hcp_license"))
    )
    return {tuple(row) for row in db.session.execute(query)}


def write_batch(gen, counts: dict[str, int], seconds: dict[str, float]) -> None:
    """Insert the buffered rows (parents first) and commit them as one batch."""
    session = db.session
    last_event = session.scalar(sa.select(sa.func.max(Event.id))) or 0
    for key, table in (("profiles", Profile), ("identities", Identity), ("events", Event)):
        started, rows = time.perf_counter(), getattr(gen, key)
        for i in range(0, len(rows), INSERT_ROWS):
            session.execute(sa.insert(table.__table__), rows[i : i + INSERT_ROWS])
        if key == "events":  # their purchase lines, read back for the ids the database gave
            project_events(session, Event.id > last_event)
        counts[key] += len(rows)
        rows.clear()
        seconds[key] += time.perf_counter() - started
    started = time.perf_counter()
    insert_consents(session, gen.consents)
    counts["consents"] += len(gen.consents)
    gen.consents.clear()
    seconds["consents"] += time.perf_counter() - started
    started = time.perf_counter()
    session.commit()
    seconds["commit"] += time.perf_counter() - started


def sync_profile_sequence() -> None:
    # Ids were assigned here, so PostgreSQL's sequence must be moved past them.
    if db.session.get_bind().dialect.name == "postgresql":
        sql = "SELECT setval(pg_get_serial_sequence('profiles', 'id'), max(id)) FROM profiles"
        db.session.execute(sa.text(sql))
        db.session.commit()


def stamp_last_events(source_ids) -> None:
    """The sources' "last event" (shown in the sources list) from what was just inserted."""
    latest = (
        sa.select(sa.func.max(Event.received_at))
        .where(Event.source_id == Source.id)
        .scalar_subquery()
    )
    db.session.execute(
        sa.update(Source).where(Source.id.in_(list(source_ids))).values(last_event_at=latest)
    )
    db.session.commit()
