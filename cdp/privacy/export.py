"""PIPL Art. 45 access and portability: everything held about a person, as JSON or a CSV zip.

Sections come from the core tables; other packages add theirs (coupons, points, journeys,
deliveries) with ``register_export_section(name, fn(profile_ids) -> list[dict])``.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Callable
from datetime import date, datetime

import orjson
import sqlalchemy as sa

from cdp import audit
from cdp.actors import Actor
from cdp.auth.permissions import require
from cdp.db import db, transaction, utcnow
from cdp.models import (
    ConsentRecord,
    ConsentState,
    Event,
    Identity,
    IdentityConflict,
    Merge,
    Profile,
    Violation,
)
from cdp.models.content import SubscribeCredit
from cdp.models.privacy import PrivacyRequest
from cdp.pii import vault
from cdp.profiles import decrypt_profile_pii, get_live_profile, profile_family

EXPORT_SECTIONS: dict[str, Callable[[list[int]], list[dict]]] = {}
_CHUNK = 500


def register_export_section(name: str, fn: Callable[[list[int]], list[dict]]) -> None:
    EXPORT_SECTIONS[name] = fn


def _row(obj, *names: str) -> dict:
    return {name: getattr(obj, name) for name in names}


def _profiles(ids: list[int]) -> list[dict]:
    rows = []
    for p in db.session.scalars(sa.select(Profile).where(Profile.id.in_(ids)).order_by(Profile.id)):
        row = _row(p, "id", "kind", "traits", "merged_into_id", "created_at", "updated_at")
        row.update(first_seen_at=p.first_seen_at, last_seen_at=p.last_seen_at)
        row["personal_data"] = decrypt_profile_pii(p.pii_encrypted) if p.pii_encrypted else {}
        rows.append(row)
    return rows


def identifier_values(ids: list[int]) -> list[dict]:
    """Identifiers with their values (decrypted where they are personal data)."""
    rows = []
    query = sa.select(Identity).where(Identity.profile_id.in_(ids)).order_by(Identity.id)
    for i in db.session.scalars(query):
        value = (
            vault().decrypt(i.value_encrypted, i.type.encode()).decode()
            if i.value_encrypted is not None
            else i.value_index
        )
        row = _row(i, "profile_id", "type", "namespace", "source_id", "created_at")
        rows.append({**row, "value": value})
    return rows


def _events(ids: list[int]) -> list[dict]:
    names = ("id", "profile_id", "source_id", "message_id", "type", "name", "timestamp")
    query = sa.select(Event).where(Event.profile_id.in_(ids)).order_by(Event.timestamp, Event.id)
    return [
        {
            **_row(e, *names),
            "received_at": e.received_at,
            "properties": e.properties,
            "context": e.context,
        }
        for e in db.session.scalars(query)
    ]


def message_keys(ids: list[int]) -> list[tuple[str, str]]:
    return list(
        db.session.execute(
            sa.select(Event.source_id, Event.message_id).where(Event.profile_id.in_(ids))
        ).tuples()
    )


def violations_of(keys: list[tuple[str, str]]) -> list[Violation]:
    found = []
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start : start + _CHUNK]
        found += db.session.scalars(
            sa.select(Violation).where(
                sa.tuple_(Violation.source_id, Violation.message_id).in_(chunk)
            )
        )
    return found


def _violations(ids: list[int]) -> list[dict]:
    rows = []
    for v in violations_of(message_keys(ids)):
        payload = None
        if v.payload_encrypted is not None:
            payload = orjson.loads(vault().decrypt(v.payload_encrypted, v.source_id.encode()))
        names = ("id", "source_id", "message_id", "received_at", "field", "reason", "rejected")
        rows.append({**_row(v, *names), "payload": payload})
    return rows


def _simple(model, column, names: tuple[str, ...]):
    def section(ids: list[int]) -> list[dict]:
        query = sa.select(model).where(column.in_(ids))
        return [_row(r, *names) for r in db.session.scalars(query)]

    return section


def _merges(ids: list[int]) -> list[dict]:
    query = sa.select(Merge).where(sa.or_(Merge.survivor_id.in_(ids), Merge.merged_id.in_(ids)))
    names = ("id", "survivor_id", "merged_id", "created_at", "linked_by", "undone_at")
    return [_row(m, *names) for m in db.session.scalars(query.order_by(Merge.id))]


CORE_SECTIONS: dict[str, Callable[[list[int]], list[dict]]] = {
    "profiles": _profiles,
    "identifiers": identifier_values,
    "events": _events,
    "consents": _simple(
        ConsentRecord,
        ConsentRecord.profile_id,
        (
            "id",
            "profile_id",
            "purpose",
            "channel",
            "status",
            "recorded_at",
            "source_id",
            "evidence",
        ),
    ),
    "consent_state": _simple(
        ConsentState,
        ConsentState.profile_id,
        ("profile_id", "purpose", "channel", "status", "updated_at"),
    ),
    "merges": _merges,
    "identity_conflicts": _simple(
        IdentityConflict,
        IdentityConflict.profile_id,
        ("id", "profile_id", "other_profile_id", "identifier_type", "reason", "created_at"),
    ),
    "violations": _violations,
    "subscribe_credits": _simple(
        SubscribeCredit,
        SubscribeCredit.profile_id,
        ("profile_id", "template_id", "credits", "updated_at"),
    ),
}


def collect(profile_id: int) -> dict:
    """The whole bundle for the live profile behind ``profile_id`` (no permission check)."""
    profile = get_live_profile(profile_id)
    ids = profile_family(profile.id)
    sections = {name: fn(ids) for name, fn in {**CORE_SECTIONS, **EXPORT_SECTIONS}.items()}
    return {"profile_id": profile.id, "profile_ids": ids, "exported_at": utcnow(), **sections}


def export_person(actor: Actor, profile_id: int) -> dict:
    """Export a person's data (admin); the export is recorded as a request and audited."""
    require(actor, "privacy:export")
    bundle = collect(profile_id)
    counts = {k: len(v) for k, v in bundle.items() if isinstance(v, list) and k != "profile_ids"}
    with transaction() as session:
        request = PrivacyRequest(
            kind="export",
            profile_id=bundle["profile_id"],
            status="completed",
            requested_by_id=actor.user_id,
            result=counts,
            finished_at=utcnow(),
        )
        session.add(request)
        session.flush()
        audit.record(
            actor,
            "privacy.export",
            "profile",
            bundle["profile_id"],
            request_id=request.id,
            **counts,
        )
    return bundle


def _default(value):
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError


def bundle_json(bundle: dict) -> bytes:
    return orjson.dumps(
        bundle, default=_default, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS
    )


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict | list):
        return orjson.dumps(value, default=_default).decode()
    return str(value)


def bundle_zip(bundle: dict) -> bytes:
    """One CSV per section (UTF-8 with BOM, so spreadsheet tools read Chinese) and the JSON."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("export.json", bundle_json(bundle))
        for name, rows in bundle.items():
            if not isinstance(rows, list) or name == "profile_ids":
                continue
            text = io.StringIO()
            columns = list(dict.fromkeys(key for row in rows for key in row)) or ["(empty)"]
            writer = csv.DictWriter(text, fieldnames=columns)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _cell(v) for k, v in row.items()})
            archive.writestr(f"{name}.csv", "\ufeff" + text.getvalue())
    return buffer.getvalue()
