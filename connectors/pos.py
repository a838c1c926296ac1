"""Partner-pharmacy POS: signed transaction uploads → purchase and reversal events.

``POST /connectors/pos/<source_id>/transactions`` with headers

- ``X-CarePath-Timestamp``: Unix seconds, within 5 minutes of our clock;
- ``X-CarePath-Nonce``: 8–64 characters, never reused by this source;
- ``X-CarePath-Signature``: lowercase hex HMAC-SHA256, keyed with the source's ``secret``,
  of ``timestamp + "\\n" + nonce + "\\n" + body`` (the body bytes after any
  Content-Encoding is removed).

Wrong or missing signature → 401; stale timestamp → 401; reused nonce → 409. The whole
body is validated before anything is stored (400 names the first bad field), then every
transaction is committed in one transaction. Refunds and voids become ``pos_reversal``
events and move the medicine's refill forecast back (see ``adjust_reversals``).
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from flask import Blueprint, g, request
from werkzeug.exceptions import BadRequest

from cdp.db import db, utcnow
from cdp.models import Event, Profile, Source
from cdp.profiles import live_profile_id
from cdp.sources import SourceKind
from connectors import replay
from connectors.base import connector_source, record_failures
from connectors.http_body import KB, http_error, parse_json, read_body, require_object
from connectors.pos_parse import (
    TZ,
    TransactionError,
    parse_transactions,
    purchase_id,
    trait_key,
)
from web.extensions import csrf

KIND = "pos"
MAX_BODY = 2048 * KB
SIGNED = replay.SignedRequests(
    timestamp="X-CarePath-Timestamp",
    nonce="X-CarePath-Nonce",
    signature="X-CarePath-Signature",
    realm="pos",
)

bp = Blueprint("connector_pos", __name__, url_prefix="/connectors/pos")
csrf.exempt(bp)
record_failures(bp)


class PosSourceKind(SourceKind):
    name = KIND
    label = "Pharmacy POS (signed transaction upload)"
    options_schema = {
        "type": "object",
        "required": ["partner", "secret"],
        "properties": {
            "partner": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"},
            "secret": {"type": "string", "minLength": 16, "maxLength": 256},
        },
        "additionalProperties": False,
    }
    secret_options = ("secret",)

    def endpoint_urls(self, base_url: str, source: Source) -> dict[str, str]:
        return {"transactions": f"{base_url}/connectors/pos/{source.id}/transactions"}


def _days_by_code(items: list, per_unit_of: dict | None = None) -> dict[str, float]:
    """drug code -> days the lines cover (qty x per-unit days, or the line total)."""
    out: dict[str, float] = {}
    for item in items or []:
        code = item.get("drug_code")
        per_unit = item.get("unit_days_of_supply") or (per_unit_of or {}).get(code)
        days = item["qty"] * per_unit if per_unit else item.get("days_of_supply") or 0
        out[code] = out.get(code, 0) + days
    return out


def _per_unit(items: list) -> dict[str, float]:
    return {i["drug_code"]: i["unit_days_of_supply"] for i in items if i.get("unit_days_of_supply")}


def _earlier_reversals(source_id: str, profile_id, store: str, orig: str) -> list[dict]:
    rows = db.session.scalars(
        sa.select(Event.properties).where(
            Event.source_id == source_id,
            Event.profile_id == profile_id,
            Event.name == "pos_reversal",
        )
    )
    return [p for p in rows if p.get("orig_txn_no") == orig and p.get("store_code") == store]


def adjust_reversals(source: Source, messages: list[dict]) -> None:
    """Move refill forecasts back for refunded or voided medicines, in place.

    The original purchase is looked up by its dedupe key, with the reversals already stored
    for it. A forecast changes only while the profile's trait still holds the date that
    purchase (less earlier reversals) set: a later purchase of the same medicine wins. It is
    cleared (null) when nothing of the purchase is left.
    """
    reversals = [m for m in messages if m["event"] == "pos_reversal"]
    if not reversals:
        return
    keys = {
        purchase_id(m["properties"]["store_code"], m["properties"]["orig_txn_no"])
        for m in reversals
    }
    originals = {
        row.message_id: row
        for row in db.session.execute(
            sa.select(Event.message_id, Event.profile_id, Event.timestamp, Event.properties).where(
                Event.source_id == source.id, Event.message_id.in_(list(keys))
            )
        )
    }
    left: dict[str, dict[str, float]] = {}  # original -> drug code -> days still covered
    profiles: dict[int | None, dict] = {}  # live profile id -> its traits as we change them
    for message in reversals:
        props = message["properties"]
        original = originals.get(purchase_id(props["store_code"], props["orig_txn_no"]))
        if original is None:
            continue  # not synced (yet): the forecast stays as it is
        items = original.properties.get("items") or []
        per_unit = _per_unit(items)
        if not props["items"]:  # a void without lines reverses everything
            props["items"] = items
        if original.message_id not in left:
            remaining = _days_by_code(items)
            for earlier in _earlier_reversals(
                source.id, original.profile_id, props["store_code"], props["orig_txn_no"]
            ):
                for code, days in _days_by_code(earlier.get("items"), per_unit).items():
                    remaining[code] = remaining.get(code, 0) - days
            left[original.message_id] = remaining
        remaining = left[original.message_id]
        live = live_profile_id(original.profile_id) if original.profile_id else None
        if live not in profiles:
            profiles[live] = dict(db.session.get(Profile, live).traits or {}) if live else {}
        traits = profiles[live]
        start = original.timestamp.astimezone(TZ).date()
        for code, days in _days_by_code(props["items"], per_unit).items():
            if code not in remaining:
                continue
            before = remaining[code]
            expected = (start + timedelta(days=int(before))).isoformat() if before > 0 else None
            remaining[code] = before - days
            key = trait_key(code)
            if traits.get(key) != expected:
                continue
            after = remaining[code]
            value = (start + timedelta(days=int(after))).isoformat() if after > 0 else None
            message.setdefault("traits", {})[key] = value
            traits[key] = value
    db.session.rollback()  # end the read transaction before ingest starts its own


@bp.post("/<source_id>/transactions")
def transactions(source_id: str):
    received_at = utcnow()
    source, options = connector_source(source_id, KIND)
    body = read_body(MAX_BODY, what="the transactions body")
    g.connector_payload = body
    nonce = SIGNED.verify(options["secret"], request.headers, body)
    try:
        payload = require_object(parse_json(body))
        messages, skipped, positions = parse_transactions(payload, options["partner"])
    except TransactionError as exc:
        raise http_error(BadRequest, str(exc), field=exc.field) from None
    return SIGNED.ingest_once(
        source,
        nonce,
        messages,
        positions,
        skipped,
        received_at,
        before=lambda: adjust_reversals(source, messages),
    )


def parse_payload(payload: dict, partner: str) -> list[dict]:
    """Canonical messages of a transactions body, without HTTP (``cdp seed-demo``, tests).

    Refunds and voids come out as ``pos_reversal`` events; moving the refill forecast back
    needs the stored original (``adjust_reversals``), which only the endpoint does.
    """
    return parse_transactions(payload, partner)[0]
