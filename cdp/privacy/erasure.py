"""PIPL Art. 47 erasure: remove a person's data from every table, keep only a tombstone.

Runs as a background job (``run_erasure``) with a JobRun for progress:

1. tombstones for every identifier of the person (keyed hashes; see tombstones.py);
2. violations of their messages, and any other violation whose decrypted payload names
   one of their identifiers or personal values;
3. registered erasure hooks (packages whose data is not reachable by foreign key);
4. every row of every table that references the person's profiles or events through a
   foreign key, found from the schema itself (so tables added later are covered), then
   their events and profiles;
5. their event and profile ids removed from the outbox bookkeeping.

The audit log keeps its rows (ids and counts, never personal values) and the request
keeps the profile id and counts, so the erasure itself stays accountable.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import timedelta

import sqlalchemy as sa

from cdp import audit
from cdp.actors import Actor
from cdp.auth.permissions import require
from cdp.db import db, transaction, utcnow
from cdp.exceptions import Conflict
from cdp.jobs import create_job, mark_finished, mark_running, report_progress
from cdp.models import Event, Identity, OutboxBatch, Profile, Violation
from cdp.models.privacy import PrivacyRequest
from cdp.pii import vault
from cdp.privacy.export import message_keys, violations_of
from cdp.privacy.tombstones import add_tombstones
from cdp.profiles import decrypt_profile_pii, get_live_profile, profile_family
from cdp.queue import enqueue, task

log = logging.getLogger(__name__)
ERASURE_ACTOR = Actor(kind="system", role="admin", request_id="erasure")
# name -> fn(profile_ids, event_ids) -> rows removed; for data no foreign key leads to.
ERASURE_HOOKS: dict[str, Callable[[list[int], list[int]], int]] = {}
STALE_AFTER = timedelta(minutes=5)
_BATCH = 500
_MIN_NEEDLE = 2


def register_erasure_hook(name: str, fn: Callable[[list[int], list[int]], int]) -> None:
    ERASURE_HOOKS[name] = fn


def request_erasure(actor: Actor, profile_id: int, reason: str = "") -> PrivacyRequest:
    """Queue the erasure of the person behind ``profile_id`` (admin); returns the request."""
    require(actor, "privacy:erase")
    profile = get_live_profile(profile_id)
    pending = db.session.scalar(
        sa.select(PrivacyRequest).where(
            PrivacyRequest.kind == "erasure",
            PrivacyRequest.profile_id == profile.id,
            PrivacyRequest.status.in_(("queued", "running")),
        )
    )
    if pending is not None:
        raise Conflict(f"erasure request {pending.id} for this person is already pending")
    job = create_job(actor, "privacy.erasure")
    with transaction() as session:
        request = PrivacyRequest(
            kind="erasure",
            profile_id=profile.id,
            job_id=job.id,
            requested_by_id=actor.user_id,
            reason=(reason or "")[:300],
        )
        session.add(request)
        session.flush()
        job.params = {"request_id": request.id}
        audit.record(actor, "privacy.erase_requested", "profile", profile.id, request_id=request.id)
    _enqueue(request.id)
    return request


def _enqueue(request_id: int) -> None:
    try:
        enqueue("cdp.privacy.erasure.run_erasure", request_id, queue="default")
    except Exception:  # the sweep hook enqueues it again
        log.warning("erasure: could not enqueue request %s", request_id)


def _personal_values(family: list[int]) -> tuple[list[tuple[str, str, str]], set[str]]:
    """The person's identifiers (type, namespace, value) and every personal value to look for."""
    identifiers = []
    for row in db.session.scalars(sa.select(Identity).where(Identity.profile_id.in_(family))):
        value = (
            vault().decrypt(row.value_encrypted, row.type.encode()).decode()
            if row.value_encrypted is not None
            else row.value_index
        )
        identifiers.append((row.type, row.namespace, value))
    needles = {value for _, _, value in identifiers}
    if needles:
        needles |= {v.removeprefix("+86") for t, _, v in identifiers if t == "phone"}
    for blob in db.session.scalars(sa.select(Profile.pii_encrypted).where(Profile.id.in_(family))):
        if blob:
            for value in decrypt_profile_pii(blob).values():
                if isinstance(value, str | int) and not isinstance(value, bool):
                    needles.add(str(value).strip())
    return identifiers, {n for n in needles if len(n) >= _MIN_NEEDLE}


def _erase_violations(family: list[int], needles: set[str], job_id: int | None) -> int:

    removed = {v.id for v in violations_of(message_keys(family))}
    encoded = [n.encode() for n in needles]
    last, scanned = 0, 0
    while encoded:
        rows = db.session.execute(
            sa.select(Violation.id, Violation.source_id, Violation.payload_encrypted)
            .where(Violation.id > last, Violation.payload_encrypted.is_not(None))
            .order_by(Violation.id)
            .limit(_BATCH)
        ).all()
        if not rows:
            break
        for violation_id, source_id, blob in rows:
            try:
                text = vault().decrypt(blob, source_id.encode())
            except Exception:  # undecryptable: not ours to judge, keep it
                continue
            squashed = re.sub(rb"[\s\-()]", b"", text)  # "138 0013 8000" is the same phone
            if any(n in text or n in squashed for n in encoded):
                removed.add(violation_id)
        last = rows[-1][0]
        scanned += len(rows)
        if job_id:
            report_progress(job_id, scanned, "scanning rejected events")
    ids = sorted(removed)
    for start in range(0, len(ids), _BATCH):
        db.session.execute(
            sa.delete(Violation).where(Violation.id.in_(ids[start : start + _BATCH]))
        )
    return len(ids)


def _selectors(family: list[int]) -> list[tuple[sa.Table, sa.ColumnElement]]:
    """For every table holding rows of the person (through foreign keys), a WHERE clause.

    Walks the schema in dependency order: a table is selected when one of its foreign keys
    points at a selected row of another table.
    """
    profiles = Profile.__table__
    chosen: dict[str, tuple[sa.Table, sa.ColumnElement]] = {
        "profiles": (profiles, profiles.c.id.in_(family))
    }
    for table in db.metadata.sorted_tables:
        if table.name == "profiles":
            continue
        clauses = []
        for fk in table.foreign_keys:
            target = fk.column.table.name
            if target in chosen and target != table.name:
                parent, where = chosen[target]
                clauses.append(fk.parent.in_(sa.select(fk.column).where(where)))
        if clauses:
            chosen[table.name] = (table, sa.or_(*clauses))
    order = {t.name: i for i, t in enumerate(db.metadata.sorted_tables)}
    return sorted(chosen.values(), key=lambda pair: order[pair[0].name], reverse=True)


def _delete_rows(family: list[int]) -> dict[str, int]:
    counts = {}
    profiles = Profile.__table__
    db.session.execute(
        sa.update(profiles).where(profiles.c.id.in_(family)).values(merged_into_id=None)
    )
    for table, where in _selectors(family):
        result = db.session.execute(sa.delete(table).where(where))
        if result.rowcount:
            counts[str(table.name)] = result.rowcount
    return counts


def _scrub_outbox(family: list[int], event_ids: set[int], since) -> int:
    if since is None:
        return 0
    changed = 0
    people = set(family)
    query = sa.select(OutboxBatch).where(OutboxBatch.created_at >= since - timedelta(days=1))
    for batch in db.session.scalars(query):
        events = [i for i in batch.event_ids or [] if i not in event_ids]
        profiles = [i for i in batch.profile_ids or [] if i not in people]
        if events != batch.event_ids or profiles != batch.profile_ids:
            batch.event_ids, batch.profile_ids = events, profiles
            changed += 1
    return changed


def erase_person(request: PrivacyRequest, job_id: int | None = None) -> dict:
    """Erase everything of the request's person; returns counts (no personal values)."""
    exists = db.session.get(Profile, request.profile_id) is not None
    family = profile_family(request.profile_id) if exists else []
    if not family:
        return {"profiles": 0}
    identifiers, needles = _personal_values(family)
    event_ids = set(db.session.scalars(sa.select(Event.id).where(Event.profile_id.in_(family))))
    since = db.session.scalar(
        sa.select(sa.func.min(Event.received_at)).where(Event.profile_id.in_(family))
    )
    with transaction():
        tombstones = add_tombstones(identifiers, request.id)
    with transaction():
        violations = _erase_violations(family, needles, job_id)
        hooks = {name: fn(family, sorted(event_ids)) for name, fn in ERASURE_HOOKS.items()}
        outbox = _scrub_outbox(family, event_ids, since)
        rows = _delete_rows(family)
    return {
        "tombstones": tombstones,
        "violations": violations,
        "outbox_batches": outbox,
        "hooks": hooks,
        "rows": rows,
    }


@task
def run_erasure(request_id: int) -> str:
    """The erasure job (idempotent: a finished request is left alone, a failed one re-runs)."""
    request = db.session.get(PrivacyRequest, request_id)
    if request is None or request.kind != "erasure" or request.status == "completed":
        return "nothing to do"
    request.status = "running"
    db.session.commit()
    if request.job_id:
        mark_running(request.job_id)
    try:
        result = erase_person(request, request.job_id)
    except Exception:
        db.session.rollback()
        request = db.session.get(PrivacyRequest, request_id)
        request.status = "failed"
        db.session.commit()
        if request.job_id:
            mark_finished(request.job_id, "erasure failed; it will be retried", failed=True)
        raise
    with transaction():
        request.status, request.result, request.finished_at = "completed", result, utcnow()
        audit.record(
            ERASURE_ACTOR,
            "privacy.erase",
            "profile",
            request.profile_id,
            request_id=request.id,
            rows=sum(result.get("rows", {}).values()),
            tombstones=result.get("tombstones", 0),
        )
    if request.job_id:
        mark_finished(request.job_id, f"erased {sum(result.get('rows', {}).values())} rows")
    return "completed"


def requeue_stale_erasures() -> int:
    """Sweep hook: enqueue again erasures whose job Redis lost (queued for too long)."""
    cutoff = utcnow() - STALE_AFTER
    stale = list(
        db.session.scalars(
            sa.select(PrivacyRequest.id).where(
                PrivacyRequest.kind == "erasure",
                PrivacyRequest.status == "queued",
                PrivacyRequest.created_at < cutoff,
            )
        )
    )
    for request_id in stale:
        _enqueue(request_id)
    return len(stale)
