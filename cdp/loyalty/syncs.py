"""Running member syncs: inline for small uploads, as a resumable background job for big ones.

A sync is processed in chunks of 1,000 rows: ingest the changed rows (one transaction),
then upsert the member rows, record consent and save the chunk's outcome (a second
transaction). A job killed half-way resumes after the last saved chunk; rows it already
applied come back "unchanged", and ingestion drops the repeated messages by id.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

import sqlalchemy as sa

from cdp import audit
from cdp.actors import Actor
from cdp.auth.permissions import require
from cdp.db import db, transaction, utcnow
from cdp.exceptions import NotFound, ValidationFailed
from cdp.ingest.pipeline import ingest
from cdp.jobs import create_job, mark_finished, mark_running, report_progress
from cdp.loyalty.common import begin_write, dialect_insert, setting
from cdp.loyalty.consents import record_member_consents
from cdp.loyalty.members import (
    MAX_ROWS,
    MemberRow,
    RowRejected,
    card_profiles,
    existing_members,
    identify_message,
    normalise_row,
    row_digest,
)
from cdp.loyalty.partners import PartnerActor, get_partner, store_codes
from cdp.models import Source
from cdp.models.loyalty import Member, MemberSync
from cdp.pii import vault
from cdp.privacy.keys import EncryptedColumn
from cdp.queue import enqueue

log = logging.getLogger(__name__)
CHUNK = 1000


def _aad(sync_id: int, what: str) -> bytes:
    return f"loyalty-sync:{sync_id}:{what}".encode()


# The uploaded and the rejected rows hold members' names and phones: `cdp privacy rotate-key`
# re-encrypts them (registered by cdp.loyalty.init_app).
ENCRYPTED_COLUMNS = tuple(
    EncryptedColumn(
        "loyalty_member_syncs", f"{what}_encrypted", ("id",), lambda row, w=what: _aad(row[0], w)
    )
    for what in ("rows", "rejected")
)


def _authorise(actor: Actor, partner_id: int) -> None:
    if isinstance(actor, PartnerActor):
        require(actor, "partner:api")
        if actor.partner_id != partner_id:
            raise NotFound("no such partner", "partner_id")
    else:
        require(actor, "loyalty:partners")


def start_sync(actor: Actor, partner_id: int, rows: list, file_format: str = "json") -> MemberSync:
    """Record an upload and process it now, or queue it when it is large."""
    _authorise(actor, partner_id)
    partner = get_partner(partner_id)
    if not isinstance(rows, list) or not rows:
        raise ValidationFailed("the upload has no member rows", "members")
    if len(rows) > MAX_ROWS:
        raise ValidationFailed(
            f"at most {MAX_ROWS:,} rows per upload ({len(rows):,} sent); split the file", "members"
        )
    background = len(rows) > setting("LOYALTY_SYNC_INLINE_ROWS")
    with transaction() as session:
        sync = MemberSync(
            partner_id=partner.id,
            file_format=file_format,
            total=len(rows),
            status="queued",
            actor=actor.audit_id or actor.kind,
        )
        session.add(sync)
        session.flush()
        if background:
            sync.rows_encrypted = vault().encrypt_json(rows, _aad(sync.id, "rows"))
        audit.record(actor, "member_sync.start", "member_sync", sync.id, rows=len(rows))
    if not background:
        run_sync(sync.id, rows)
        db.session.refresh(sync)
        return sync
    job = create_job(actor, "member_sync", {"sync_id": sync.id}, total=len(rows))
    with transaction():
        sync.job_id = job.id
    try:
        enqueue("cdp.loyalty.tasks.run_member_sync", sync.id, queue="connectors")
    except Exception:  # the sweep hook finds queued syncs again
        log.warning("member sync %s: could not enqueue", sync.id)
    return sync


def _actor_of(sync: MemberSync) -> Actor:
    if (sync.actor or "").startswith("partner:"):
        return PartnerActor(kind="partner", role="partner", partner_id=sync.partner_id)
    return Actor.system(f"member-sync-{sync.id}")


def run_sync(sync_id: int, rows: list | None = None) -> MemberSync:
    """Process a sync from where it stopped; a finished sync is left alone."""
    sync = db.session.get(MemberSync, sync_id)
    if sync is None or sync.status in ("succeeded", "failed"):
        return sync
    if rows is None:
        rows = vault().decrypt_json(sync.rows_encrypted, _aad(sync.id, "rows"))
    partner = get_partner(sync.partner_id)
    source = db.session.get(Source, partner.source_id)
    actor = _actor_of(sync)
    with transaction():
        sync.status = "running"
        sync.started_at = sync.started_at or utcnow()
    if sync.job_id:
        mark_running(sync.job_id, total=len(rows))
    try:
        stores = store_codes(partner.id)
        seen = _cards_before(rows, sync.processed, stores)
        while sync.processed < len(rows):
            start = sync.processed
            _run_chunk(
                actor, sync, partner, source, rows[start : start + CHUNK], start, seen, stores
            )
            if sync.job_id:
                report_progress(sync.job_id, sync.processed)
    except Exception as exc:
        db.session.rollback()
        log.exception("member sync %s failed", sync_id)
        with transaction():
            sync = db.session.get(MemberSync, sync_id)
            sync.status, sync.error, sync.finished_at = "failed", str(exc)[:500], utcnow()
        if sync.job_id:
            mark_finished(sync.job_id, message=str(exc)[:200], failed=True)
        raise
    with transaction():
        sync.status, sync.finished_at, sync.rows_encrypted = "succeeded", utcnow(), None
        audit.record(
            actor, "member_sync.finish", "member_sync", sync.id,
            created=sync.created, updated=sync.updated, unchanged=sync.unchanged,
            rejected=sync.rejected,
        )  # fmt: skip
    if sync.job_id:
        mark_finished(sync.job_id, message=f"{sync.processed} rows")
    return sync


def _cards_before(rows: list, upto: int, stores: set[str]) -> dict[str, int]:
    """Cards of rows already processed (to refuse later duplicates after a resume)."""
    seen: dict[str, int] = {}
    for index, raw in enumerate(rows[:upto]):
        try:
            seen.setdefault(normalise_row(index, raw, stores).card_no, index)
        except RowRejected:
            continue
    return seen


@dataclass
class _Chunk:
    """One chunk's rows on their way through validation, ingestion and the member upsert."""

    start: int
    raws: list
    outcome: dict = field(default_factory=dict)  # index -> (status, reason)
    rejected: list = field(default_factory=list)

    def reject(self, index: int, reason: str) -> None:
        self.outcome[index] = ("rejected", reason)
        self.rejected.append(
            {"index": index, "reason": reason, "row": self.raws[index - self.start]}
        )

    def validate(self, partner_id: int, seen: dict, stores: set[str]) -> list[MemberRow]:
        valid = []
        for offset, raw in enumerate(self.raws):
            index = self.start + offset
            try:
                row = normalise_row(index, raw, stores)
                if row.card_no in seen:
                    raise RowRejected(f"card_no: repeats row {seen[row.card_no]} of this upload")
            except RowRejected as bad:
                self.reject(index, bad.reason)
                continue
            seen[row.card_no] = index
            row.digest = row_digest(partner_id, row)
            valid.append(row)
        return valid


def _run_chunk(actor, sync, partner, source, raws, start, seen, stores) -> None:
    session = db.session
    chunk = _Chunk(start, raws)
    valid = chunk.validate(partner.id, seen, stores)
    before = {
        card: (member.row_digest, dict(member.consents or {}))
        for card, member in existing_members(
            session, partner.id, [r.card_no for r in valid]
        ).items()
    }
    changed = []
    for row in valid:
        if row.card_no in before and before[row.card_no][0] == row.digest:
            chunk.outcome[row.index] = ("unchanged", None)
        else:
            changed.append(row)
    session.rollback()
    linked: dict[str, int] = {}
    if changed:
        result = ingest(source, [identify_message(partner, r) for r in changed])
        for problem in result.rejected:
            chunk.reject(
                changed[problem["index"]].index, f"{problem['field']}: {problem['reason']}"
            )
        linked = card_profiles(session, partner, [r.card_no for r in changed])
    with transaction() as session:
        begin_write(session)
        current = session.scalars(
            sa.select(MemberSync.processed).where(MemberSync.id == sync.id).with_for_update()
        ).one()
        if current != start:  # another run of this sync saved the chunk first
            db.session.refresh(sync)
            return
        upserts, consent_changes = [], []
        for row in changed:
            if row.index in chunk.outcome:
                continue
            if (profile_id := linked.get(row.card_no)) is None:
                chunk.reject(row.index, "card_no: identity rules refused to link this card")
                continue
            old = before.get(row.card_no)
            chunk.outcome[row.index] = ("updated" if old else "created", None)
            upserts.append(_member_values(partner.id, sync.id, row, profile_id))
            previous = old[1] if old else {}
            consent_changes += [
                (profile_id, flag, granted)
                for flag, granted in row.consents.items()
                if previous.get(flag) != granted
            ]
        _upsert_members(session, upserts)
        granted, withdrawn = record_member_consents(
            session, consent_changes, partner.source_id, actor, sync.id
        )
        _save_outcome(sync, chunk.outcome, chunk.rejected, start, len(raws))
        audit.record(
            actor, "member_sync.chunk", "member_sync", sync.id, start=start, rows=len(raws),
            consents_granted=granted, consents_withdrawn=withdrawn,
        )  # fmt: skip


def _upsert_members(session, upserts: list[dict]) -> None:
    if not upserts:
        return
    insert = dialect_insert(Member.__table__)
    keep = (
        "profile_id",
        "store_code",
        "joined_at",
        "consents",
        "row_digest",
        "last_sync_id",
        "updated_at",
    )
    session.execute(
        insert.on_conflict_do_update(
            index_elements=["partner_id", "card_no"],
            set_={name: insert.excluded[name] for name in keep},
        ),
        upserts,
    )


def _member_values(partner_id, sync_id, row, profile_id) -> dict:
    now = utcnow()
    return {
        "partner_id": partner_id,
        "card_no": row.card_no,
        "profile_id": profile_id,
        "store_code": row.store_code,
        "joined_at": row.joined_at,
        "consents": row.consents,
        "row_digest": row.digest,
        "last_sync_id": sync_id,
        "created_at": now,
        "updated_at": now,
    }


def _save_outcome(sync, outcome, rejected, start, count) -> None:
    statuses = [outcome[i] for i in range(start, start + count)]
    sync.results = [*sync.results, *[[s, r] for s, r in statuses]]
    for status in ("created", "updated", "unchanged", "rejected"):
        setattr(sync, status, getattr(sync, status) + sum(1 for s, _ in statuses if s == status))
    if rejected:
        aad = _aad(sync.id, "rejected")
        kept = vault().decrypt_json(sync.rejected_encrypted, aad) if sync.rejected_encrypted else []
        kept += sorted(rejected, key=lambda r: r["index"])
        sync.rejected_encrypted = vault().encrypt_json(kept, aad)
    sync.processed = start + count


def rejected_rows(actor: Actor, sync_id: int, partner_id: int | None = None) -> list[dict]:
    """The rejected rows of a sync with their reasons (personal data: the download is audited)."""
    sync = db.session.get(MemberSync, sync_id)
    if sync is None or (partner_id is not None and sync.partner_id != partner_id):
        raise NotFound("no such sync", "sync_id")
    _authorise(actor, sync.partner_id)
    rows = []
    if sync.rejected_encrypted:
        rows = vault().decrypt_json(sync.rejected_encrypted, _aad(sync.id, "rejected"))
    with transaction():
        audit.record(actor, "member_sync.rejected_download", "member_sync", sync.id, rows=len(rows))
    return rows


def get_sync(sync_id: int, partner_id: int | None = None) -> MemberSync:
    sync = db.session.get(MemberSync, sync_id)
    if sync is None or (partner_id is not None and sync.partner_id != partner_id):
        raise NotFound("no such sync", "sync_id")
    return sync


def list_syncs(partner_id: int, limit: int = 50) -> list[MemberSync]:
    return list(
        db.session.scalars(
            sa.select(MemberSync)
            .where(MemberSync.partner_id == partner_id)
            .order_by(MemberSync.id.desc())
            .limit(limit)
        )
    )


def stale_syncs(older_than_minutes: int = 10) -> list[int]:
    """Queued or running syncs whose job may have been lost (for the sweep hook)."""
    cutoff = utcnow() - timedelta(minutes=older_than_minutes)
    return list(
        db.session.scalars(
            sa.select(MemberSync.id).where(
                MemberSync.status.in_(("queued", "running")),
                MemberSync.rows_encrypted.is_not(None),
                MemberSync.created_at < cutoff,
            )
        )
    )
