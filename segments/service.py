"""Segment operations: create, change, archive, preview, export; each checks, commits, audits."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime

import sqlalchemy as sa

from cdp import audit
from cdp.actors import Actor
from cdp.auth.permissions import require
from cdp.db import db, transaction, utcnow
from cdp.exceptions import Conflict, NotFound, ValidationFailed
from segments import definition as definitions
from segments.compiler import analyze, compile_query
from segments.membership import (
    M,
    load_definition,
    make_context,
    members,
    profile_rows,
    whole_population,
)
from segments.models import Segment

SAMPLE_SIZE = 20
EXPORT_CHUNK = 5000
HEALTH_NOTICE = (
    "This rule uses health data (medicine purchases). Under PIPL it only counts profiles that "
    "gave separate consent to health-data processing."
)


def get_segment(segment_id: int, include_archived: bool = True) -> Segment:
    segment = db.session.get(Segment, segment_id)
    if segment is None or (segment.status != "active" and not include_archived):
        raise NotFound("no such segment", "segment_id")
    return segment


def list_segments(include_archived: bool = False) -> list[Segment]:
    query = sa.select(Segment).order_by(Segment.name, Segment.id)
    if not include_archived:
        query = query.where(Segment.status == "active")
    return list(db.session.scalars(query))


def _loader(own_id: int | None, own_definition: dict | None):
    """Definitions of active segments, with the one being edited replaced by its new text."""

    def load(segment_id: int) -> dict | None:
        if own_id is not None and segment_id == own_id:
            return own_definition
        return load_definition(segment_id)

    return load


def _derive(segment: Segment) -> None:
    """Store what the definition implies (dependencies, health data, time) on the row."""
    result = analyze(segment.definition, load_definition, segment.id)
    segment.health_data = result.health_data
    segment.time_based = result.time_based
    segment.depends_on = sorted(result.depends_on)
    segment.references = sorted(result.references)


def _check_name(name: str, own_id: int | None = None) -> str:
    name = (name or "").strip()
    if not name or len(name) > 120:
        raise ValidationFailed("name must be 1 to 120 characters", "name")
    query = sa.select(Segment.id).where(Segment.status == "active", Segment.name == name)
    if own_id is not None:
        query = query.where(Segment.id != own_id)
    if db.session.scalar(query) is not None:
        raise Conflict(f"an active segment is already called {name!r}", "name")
    return name


def _check_refresh_minutes(value) -> int | None:
    if value is not None and not (5 <= value <= 7 * 24 * 60):
        raise ValidationFailed("refresh_minutes must be between 5 and 10080", "refresh_minutes")
    return value


def create_segment(
    actor: Actor,
    name: str,
    definition: dict,
    description: str = "",
    realtime: bool = True,
    refresh_minutes: int | None = None,
) -> Segment:
    """Save a new segment; its members are computed by a refresh job (``start_refresh``)."""
    require(actor, "segments:edit")
    definitions.check(definition, load_definition)
    with transaction() as session:
        segment = Segment(
            name=_check_name(name),
            description=(description or "")[:2000],
            definition=definition,
            realtime=bool(realtime),
            refresh_minutes=_check_refresh_minutes(refresh_minutes),
            created_by_id=actor.user_id,
        )
        session.add(segment)
        session.flush()
        _derive(segment)
        audit.record(actor, "segment.create", "segment", segment.id, version=1)
    return segment


def update_segment(actor: Actor, segment_id: int, **changes) -> Segment:
    """Change name, description, definition, realtime or refresh_minutes (None: keep)."""
    require(actor, "segments:edit")
    segment = get_segment(segment_id, include_archived=False)
    new_definition = changes.get("definition")
    if new_definition is not None:
        definitions.check(new_definition, _loader(segment.id, new_definition), segment.id)
    with transaction():
        if changes.get("name") is not None:
            segment.name = _check_name(changes["name"], segment.id)
        if changes.get("description") is not None:
            segment.description = changes["description"][:2000]
        if changes.get("realtime") is not None:
            segment.realtime = bool(changes["realtime"])
        if "refresh_minutes" in changes:
            segment.refresh_minutes = _check_refresh_minutes(changes["refresh_minutes"])
        changed = new_definition is not None and new_definition != segment.definition
        if changed:
            segment.definition = new_definition
            segment.version += 1
            db.session.flush()
            _derive(segment)
            for other in _referrers(segment.id):
                _derive(other)  # their dependencies and health-data use follow this one
        segment.updated_at = utcnow()
        audit.record(
            actor,
            "segment.update",
            "segment",
            segment.id,
            version=segment.version,
            definition_changed=changed,
        )
    return segment


def _referrers(segment_id: int) -> list[Segment]:
    return [
        s
        for s in db.session.scalars(sa.select(Segment).where(Segment.status == "active"))
        if segment_id in (s.references or []) and s.id != segment_id
    ]


def archive_segment(actor: Actor, segment_id: int) -> Segment:
    """Stop computing a segment and close its open memberships (no events); history stays."""
    require(actor, "segments:edit")
    segment = get_segment(segment_id, include_archived=False)
    users = _referrers(segment.id)
    if users:
        names = ", ".join(f"#{s.id} {s.name}" for s in users)
        raise Conflict(f"segment is used by other segments: {names}", "segment_id")

    with transaction() as session:
        now = utcnow()
        session.execute(
            sa.update(M)
            .where(M.c.segment_id == segment.id, M.c.exited_at.is_(None))
            .values(exited_at=now)
        )
        segment.status, segment.size, segment.updated_at = "archived", 0, now
        audit.record(actor, "segment.archive", "segment", segment.id)
    return segment


def preview(actor: Actor, definition: dict, now: datetime | None = None) -> dict:
    """Count and a sample of 20 profiles (no personal data) matching a definition, unsaved."""
    require(actor, "segments:view")
    definitions.check(definition, load_definition)
    started = time.perf_counter()
    ctx = make_context(now)
    analysis = analyze(definition, load_definition)
    query = compile_query(definition, ctx, analysis).subquery()
    with whole_population():
        rows = db.session.execute(
            sa.select(query.c.id, sa.func.count().over()).order_by(query.c.id).limit(SAMPLE_SIZE)
        ).all()
    count = rows[0][1] if rows else 0
    return {
        "count": count,
        "sample": profile_rows([row[0] for row in rows]),
        "health_data": analysis.health_data,
        "time_based": analysis.time_based,
        "depends_on": sorted(analysis.depends_on),
        "ms": round((time.perf_counter() - started) * 1000, 1),
    }


EXPORT_FIELDS = ("profile_id", "kind", "city", "city_tier", "preferred_channel", "entered_at")


def export_members(actor: Actor, segment_id: int) -> Iterator[list]:
    """Rows of the current members for a CSV export (ids and non-personal fields); audited."""
    require(actor, "segments:export")
    segment = get_segment(segment_id)
    with transaction():
        audit.record(actor, "segment.export", "segment", segment_id, members=segment.size)

    def rows():
        yield list(EXPORT_FIELDS)
        after = 0
        while True:
            page = members(segment_id, after=after, limit=EXPORT_CHUNK)
            for row in page:
                entered = row["entered_at"].isoformat() if row["entered_at"] else ""
                yield [
                    row["profile_id"],
                    row["kind"],
                    row["city"] or "",
                    row["city_tier"] or "",
                    row["preferred_channel"] or "",
                    entered,
                ]
            if len(page) < EXPORT_CHUNK:
                return
            after = page[-1]["profile_id"]

    return rows()
