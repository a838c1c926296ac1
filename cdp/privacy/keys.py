"""PII key rotation: re-encrypt every encrypted column under a new key, in batches.

Each ciphertext starts with its key id, so rows under the old and the new key can be read
side by side while the rotation runs (cdp/pii.py). Each batch is its own transaction and
each row is written only if it still holds the ciphertext that was read (compare and set),
so concurrent writers are never overwritten; re-running finishes whatever is left.

Packages that add encrypted columns register them with ``register_encrypted_column`` from
their init path; tests/test_privacy_ops.py fails when a binary column is neither registered
nor exempt, and tests/test_key_rotation.py decrypts every registered column after a rotation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag

from cdp import audit
from cdp.actors import Actor
from cdp.auth.permissions import require
from cdp.db import db, transaction
from cdp.exceptions import ValidationFailed
from cdp.jobs import create_job, mark_finished, mark_running, report_progress
from cdp.pii import PiiVault, check_key_id, vault

BATCH_SIZE = 500


@dataclass(frozen=True)
class EncryptedColumn:
    table: str
    column: str
    # Columns of the row the associated data is made of, and how.
    aad_columns: tuple[str, ...]
    aad: Callable[[tuple], bytes]


def _constant(value: bytes) -> Callable[[tuple], bytes]:
    return lambda _values: value


def _text(values: tuple) -> bytes:
    return str(values[0]).encode()


def formatted(template: str) -> Callable[[tuple], bytes]:
    """Associated data made by ``template.format(*aad column values)``, e.g. "sync:{}:rows"."""
    return lambda values: template.format(*values).encode()


ENCRYPTED_COLUMNS: dict[tuple[str, str], EncryptedColumn] = {}
# Binary columns that hold no ciphertext (none so far).
NOT_ENCRYPTED: set[tuple[str, str]] = set()


def register_encrypted_column(column: EncryptedColumn) -> EncryptedColumn:
    ENCRYPTED_COLUMNS[(column.table, column.column)] = column
    return column


for _column in (
    EncryptedColumn("profiles", "pii_encrypted", (), _constant(b"profile")),
    EncryptedColumn("merges", "survivor_pii_before", (), _constant(b"profile")),
    EncryptedColumn("identities", "value_encrypted", ("type",), _text),
    EncryptedColumn("violations", "payload_encrypted", ("source_id",), _text),
    EncryptedColumn("inbound_batches", "payload_encrypted", ("source_id",), _text),
    EncryptedColumn("sources", "options_encrypted", ("id",), _text),
):
    register_encrypted_column(_column)


def _pk(table: sa.Table) -> list[sa.Column]:
    return list(table.primary_key.columns)


def _after(pk: list[sa.Column], last: tuple):
    """Rows after ``last`` in primary-key order (row values: composite keys page too)."""
    if len(pk) == 1:
        return pk[0] > last[0]
    return sa.tuple_(*pk) > sa.tuple_(*last)


def count_rows(spec: EncryptedColumn) -> int:
    table = db.metadata.tables[spec.table]
    return db.session.scalar(
        sa.select(sa.func.count()).select_from(table).where(table.c[spec.column].is_not(None))
    )


def rotate_column(
    spec: EncryptedColumn,
    new_vault: PiiVault,
    batch_size: int = BATCH_SIZE,
    progress: Callable[[int], object] | None = None,
) -> tuple[int, int]:
    """Re-encrypt one column; return (rows re-encrypted, rows changed concurrently)."""
    table = db.metadata.tables[spec.table]
    pk, blob_column = _pk(table), table.c[spec.column]
    aad_columns = [table.c[name] for name in spec.aad_columns]
    width = len(pk)
    done = skipped = 0
    last = None
    while True:
        query = sa.select(*pk, blob_column, *aad_columns).where(blob_column.is_not(None))
        if last is not None:
            query = query.where(_after(pk, last))
        rows = db.session.execute(query.order_by(*pk).limit(batch_size)).all()
        if not rows:
            break
        for row in rows:
            key, blob = tuple(row[:width]), bytes(row[width])  # PostgreSQL: a memoryview
            if blob[0] == new_vault.key_id:
                continue
            fresh = new_vault.reencrypt(blob, spec.aad(tuple(row[width + 1 :])))
            same_row = [column == value for column, value in zip(pk, key, strict=True)]
            result = db.session.execute(
                sa.update(table).where(*same_row, blob_column == blob).values({spec.column: fresh})
            )
            done += result.rowcount
            skipped += 1 - result.rowcount
        db.session.commit()
        last = tuple(rows[-1][:width])
        if progress:
            progress(len(rows))
    return done, skipped


def rotate_all(
    new_vault: PiiVault,
    batch_size: int = BATCH_SIZE,
    progress: Callable[[str, int, int], object] | None = None,
) -> dict[str, dict[str, int]]:
    """Re-encrypt every registered column; ``progress(column, rows_seen, total_rows)``."""
    specs = [s for s in ENCRYPTED_COLUMNS.values() if s.table in db.metadata.tables]
    totals = {f"{s.table}.{s.column}": count_rows(s) for s in specs}
    total = sum(totals.values())
    seen = 0
    report: dict[str, dict[str, int]] = {}
    for spec in specs:
        name = f"{spec.table}.{spec.column}"

        def step(rows: int, name=name) -> None:
            nonlocal seen
            seen += rows
            if progress:
                progress(name, seen, total)

        done, skipped = rotate_column(spec, new_vault, batch_size, step)
        report[name] = {"rows": totals[name], "reencrypted": done, "changed_meanwhile": skipped}
    return report


def remaining(key_id: int) -> int:
    """Rows of every registered column still under another key than ``key_id``."""
    left = 0
    for spec in ENCRYPTED_COLUMNS.values():
        if spec.table not in db.metadata.tables:
            continue
        column = db.metadata.tables[spec.table].c[spec.column]
        for (blob,) in db.session.execute(sa.select(column).where(column.is_not(None))):
            left += bytes(blob[:1]) != bytes([key_id])
    return left


def undecryptable(pii_vault: PiiVault) -> dict[str, int]:
    """Per registered column, the values ``pii_vault`` cannot decrypt (should all be 0)."""
    failures = {}
    for spec in ENCRYPTED_COLUMNS.values():
        if spec.table not in db.metadata.tables:
            continue
        table = db.metadata.tables[spec.table]
        blob_column = table.c[spec.column]
        aad_columns = [table.c[name] for name in spec.aad_columns]
        query = sa.select(blob_column, *aad_columns).where(blob_column.is_not(None))
        bad = 0
        for row in db.session.execute(query):
            try:
                pii_vault.decrypt(bytes(row[0]), spec.aad(tuple(row[1:])))
            except (ValueError, InvalidTag):  # unknown key id, or the wrong key or place
                bad += 1
        failures[f"{spec.table}.{spec.column}"] = bad
    return failures


def rotate_key(
    actor: Actor,
    new_secret: str,
    new_key_id: int | None = None,
    batch_size: int = BATCH_SIZE,
    progress: Callable[[str, int, int], object] | None = None,
) -> dict:
    """Re-encrypt all personal data under ``new_secret`` (admin); audited, with a JobRun.

    Given the current key, it finishes an earlier rotation instead: rows still under
    any other key are re-encrypted with the current one. Blind indexes keep their key.
    """
    require(actor, "privacy:keys")
    current = vault()
    if not new_secret or len(new_secret) < 16:
        raise ValidationFailed("the new key must be at least 16 characters", "new_key")
    if new_secret == current.secret_of(current.key_id):
        key_id = current.key_id
    else:
        key_id = check_key_id(new_key_id or current.key_id + 1)
        if key_id in current.key_ids:
            raise ValidationFailed(f"key id {key_id} is already used by another key", "key_id")
    new_vault = PiiVault(
        new_secret,
        key_id,
        decrypt_keys={kid: current.secret_of(kid) for kid in current.key_ids},
        index_secret=current.index_secret,
    )
    job = create_job(actor, "privacy.rotate_key", {"key_id": key_id})
    mark_running(job.id)

    def step(column: str, seen: int, total: int) -> None:
        report_progress(job.id, seen, column)
        if progress:
            progress(column, seen, total)

    try:
        columns = rotate_all(new_vault, batch_size, step)
    except Exception:
        db.session.rollback()
        mark_finished(job.id, "key rotation failed; run it again to resume", failed=True)
        raise
    rows = sum(c["reencrypted"] for c in columns.values())
    with transaction():
        audit.record(actor, "privacy.rotate_key", "pii_key", key_id, reencrypted=rows)
    mark_finished(job.id, f"re-encrypted {rows} values under key {key_id}")
    return {"key_id": key_id, "job_id": job.id, "reencrypted": rows, "columns": columns}
