"""Pharmacy POS transactions → canonical events (``pos_purchase``, ``pos_reversal``) + refill traits.

Wire format (one request carries up to 500 transactions; see docs/connectors.md)::

    {"transactions": [{
        "txn_no": "T20250301-0001", "type": "sale" | "refund" | "void",
        "orig_txn_no": "…" (refund / void), "store_code": "SZ001",
        "txn_time": "2025-03-01T10:15:00+08:00",
        "member": {"card_no": "M0001", "phone": "13800138000"},
        "lines": [{"line_no": 1, "drug_code": "86900001000015",
                   "approval_no": "国药准字H20041126", "name": "阿托伐他汀钙片 20mg×30片",
                   "qty": 2, "unit": "盒", "unit_price": 98.5, "amount": 197.0,
                   "days_of_supply": 30, "rx": true, "prescription_id": "RX123"}],
        "coupons": ["CP-8812"], "points_used": 100, "points_earned": 19,
        "total_amount": 187.0, "discount_amount": 10.0, "payment_method": "wechat_pay"}]}

``days_of_supply`` on the wire is per unit (one pack). In the event, as the segment rules
and the demo data expect, ``items[].days_of_supply`` is the days the whole line covers
(qty × per unit) and ``unit_days_of_supply`` the wire value. The refill forecast is one
trait per medicine, ``refill_run_out_<drug code>`` = the local purchase date + that line
total (ISO date), so segments can ask "runs out within 7 days" per drug.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import jsonschema

from connectors.base import external_id, message_id

MAX_TRANSACTIONS = 500
TZ = ZoneInfo("Asia/Shanghai")
TRAIT_PREFIX = "refill_run_out_"
_CODE = re.compile(r"[^A-Za-z0-9_]")
_TEXT = {"type": "string", "minLength": 1, "maxLength": 64}
_MONEY = {"type": "number", "minimum": 0, "maximum": 10_000_000}
LINE = {
    "type": "object",
    "required": ["drug_code", "name", "qty", "unit_price"],
    "properties": {
        "line_no": {"type": "integer", "minimum": 0},
        "drug_code": _TEXT,
        "approval_no": {"type": "string", "maxLength": 64},
        "name": {"type": "string", "minLength": 1, "maxLength": 200},
        "qty": {"type": "number", "exclusiveMinimum": 0, "maximum": 100_000},
        "unit": {"type": "string", "maxLength": 16},
        "unit_price": _MONEY,
        "amount": _MONEY,
        "days_of_supply": {"type": "number", "minimum": 0, "maximum": 3650},
        "rx": {"type": "boolean"},
        "prescription_id": {"type": "string", "maxLength": 64},
    },
}
TRANSACTION = {
    "type": "object",
    "required": ["txn_no", "store_code", "txn_time"],
    "properties": {
        "txn_no": _TEXT,
        "type": {"enum": ["sale", "refund", "void"]},
        "orig_txn_no": _TEXT,
        "store_code": _TEXT,
        "txn_time": {"type": "string", "minLength": 10, "maxLength": 40},
        "member": {
            "type": ["object", "null"],
            "properties": {
                "card_no": {"type": ["string", "integer"]},
                "phone": {"type": ["string", "integer"]},
            },
        },
        "lines": {"type": "array", "maxItems": 200, "items": LINE},
        "coupons": {"type": "array", "maxItems": 20, "items": _TEXT},
        "points_used": {"type": "number", "minimum": 0},
        "points_earned": {"type": "number", "minimum": 0},
        "total_amount": _MONEY,
        "discount_amount": _MONEY,
        "payment_method": {"type": "string", "maxLength": 32},
        "pharmacist_id": {"type": "string", "maxLength": 64},
    },
    "allOf": [
        {
            "if": {"properties": {"type": {"enum": ["refund", "void"]}}, "required": ["type"]},
            "then": {"required": ["orig_txn_no"]},
            "else": {"required": ["lines"], "properties": {"lines": {"minItems": 1}}},
        }
    ],
}


class TransactionError(ValueError):
    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason


@cache
def schema_validator() -> jsonschema.Draft202012Validator:
    """The documented contract (``TRANSACTION``); the endpoint uses the faster ``check``."""
    return jsonschema.Draft202012Validator(TRANSACTION)


def _txn_time(raw: str, field: str) -> datetime:
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise TransactionError(field, f"'{raw[:40]}' is not an ISO 8601 date-time") from None
    return value if value.tzinfo else value.replace(tzinfo=TZ)  # POS clocks are local time


def _text(obj: dict, key: str, path: str, required=False, low=1, high=64, ints=False) -> None:
    value = obj.get(key)
    if value is None:
        if required:
            raise TransactionError(
                f"{path}.{key}" if path else key, f"'{key}' is a required property"
            )
        return
    if ints and isinstance(value, int) and not isinstance(value, bool):
        return
    if not isinstance(value, str):
        raise TransactionError(f"{path}.{key}", f"{value!r:.40} is not of type 'string'")
    if not low <= len(value) <= high:
        raise TransactionError(f"{path}.{key}", f"must be {low} to {high} characters long")


def _number(obj: dict, key: str, path: str, required=False, low=0.0, high=10_000_000, above=False):
    value = obj.get(key)
    if value is None:
        if required:
            raise TransactionError(path, f"'{key}' is a required property")
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TransactionError(f"{path}.{key}", f"{value!r:.40} is not of type 'number'")
    if value < low or (above and value <= low) or value > high:
        relation = "greater than" if above else "at least"
        raise TransactionError(
            f"{path}.{key}", f"{value} must be {relation} {low} and at most {high}"
        )


def _check_line(line, path: str) -> None:
    if not isinstance(line, dict):
        raise TransactionError(path, "each line must be an object")
    _text(line, "drug_code", path, required=True)
    _text(line, "name", path, required=True, high=200)
    _number(line, "qty", path, required=True, high=100_000, above=True)
    _number(line, "unit_price", path, required=True)
    _number(line, "amount", path)
    _number(line, "days_of_supply", path, high=3650)
    _number(line, "line_no", path, high=10**9)
    for key, high in (("approval_no", 64), ("unit", 16), ("prescription_id", 64)):
        _text(line, key, path, low=0, high=high)
    if "rx" in line and not isinstance(line["rx"], bool):
        raise TransactionError(f"{path}.rx", f"{line['rx']!r:.40} is not of type 'boolean'")


def _check_member(member, path: str) -> None:
    if member is None:
        return
    if not isinstance(member, dict):
        raise TransactionError(path, "must be an object or null")
    _text(member, "card_no", path, high=64, ints=True)
    _text(member, "phone", path, high=32, ints=True)


def _check_lines(lines, kind: str, path: str) -> None:
    if lines is None:
        if kind == "sale":
            raise TransactionError(path, "'lines' is a required property")
        return
    if not isinstance(lines, list) or len(lines) > 200 or (kind == "sale" and not lines):
        raise TransactionError(f"{path}.lines", "must be an array of 1 to 200 lines")
    for j, line in enumerate(lines):
        _check_line(line, f"{path}.lines.{j}")


def check(txn, path: str) -> None:
    """Validate one transaction against ``TRANSACTION`` (hand-written: 20x faster)."""
    if not isinstance(txn, dict):
        raise TransactionError(path, "each transaction must be an object")
    for key in ("txn_no", "store_code"):
        _text(txn, key, path, required=True)
    _text(txn, "txn_time", path, required=True, low=10, high=40)
    kind = txn.get("type", "sale")
    if kind not in ("sale", "refund", "void"):
        raise TransactionError(
            f"{path}.type", f"{kind!r:.40} is not one of 'sale', 'refund', 'void'"
        )
    if kind != "sale":
        _text(txn, "orig_txn_no", path, required=True)
    _check_member(txn.get("member"), f"{path}.member")
    _check_lines(txn.get("lines"), kind, path)
    coupons = txn.get("coupons")
    if coupons is not None and (
        not isinstance(coupons, list)
        or len(coupons) > 20
        or not all(isinstance(c, str) and 1 <= len(c) <= 64 for c in coupons)
    ):
        raise TransactionError(f"{path}.coupons", "must be an array of at most 20 coupon codes")
    for key in ("points_used", "points_earned", "total_amount", "discount_amount"):
        _number(txn, key, path)
    _text(txn, "payment_method", path, low=0, high=32)
    _text(txn, "pharmacist_id", path, low=0, high=64)


def validate(transactions, prefix: str = "transactions") -> list[datetime]:
    """Check every transaction before anything is stored; return their times.

    :raise TransactionError: naming the first bad field (``transactions.3.lines.0.qty``).
    """
    if not isinstance(transactions, list):
        raise TransactionError(prefix, "must be a JSON array of transactions")
    if not transactions or len(transactions) > MAX_TRANSACTIONS:
        raise TransactionError(prefix, f"must hold 1 to {MAX_TRANSACTIONS} transactions")
    times = []
    for i, txn in enumerate(transactions):
        check(txn, f"{prefix}.{i}")
        times.append(_txn_time(txn["txn_time"], f"{prefix}.{i}.txn_time"))
    return times


def trait_key(drug_code: str) -> str:
    return TRAIT_PREFIX + _CODE.sub("_", str(drug_code))[:48]


def _item(line: dict) -> dict:
    qty = line["qty"]
    per_unit = line.get("days_of_supply")
    item = {
        "drug_code": str(line["drug_code"]),
        "approval_no": line.get("approval_no") or None,
        "name": line["name"],
        "qty": qty,
        "unit_price": line["unit_price"],
        "amount": line.get("amount", round(qty * line["unit_price"], 2)),
        "rx": bool(line.get("rx", False)),
        "prescription_id": line.get("prescription_id") or None,
    }
    if line.get("unit"):
        item["unit"] = line["unit"]
    if per_unit is not None:
        item["unit_days_of_supply"] = per_unit
        item["days_of_supply"] = round(qty * per_unit, 2)
    return item


def refill_traits(items: list[dict], at: datetime) -> dict:
    """``refill_run_out_<code>``: local purchase date + the days the lines of that drug cover."""
    days: dict[str, float] = {}
    for item in items:
        if item.get("days_of_supply"):
            days[item["drug_code"]] = days.get(item["drug_code"], 0) + item["days_of_supply"]
    local = at.astimezone(TZ).date()
    return {
        trait_key(code): (local + timedelta(days=int(d))).isoformat() for code, d in days.items()
    }


def _identity(txn: dict, partner: str) -> tuple[list, dict]:
    member = txn.get("member") or {}
    ids, traits = [], {}
    if member.get("card_no") not in (None, ""):
        ids.append(external_id("pharmacy_member", member["card_no"], partner))
    if member.get("phone") not in (None, ""):
        traits["phone"] = str(member["phone"])
    return ids, traits


def purchase_id(store_code: str, txn_no: str) -> str:
    return message_id("pos", store_code, txn_no)


def parse_transaction(txn: dict, at: datetime, partner: str) -> dict | None:
    """One validated transaction as a canonical message; None when it names nobody."""
    ids, traits = _identity(txn, partner)
    if not ids and not traits:
        return None  # an anonymous walk-in sale: no profile to attach it to
    kind = txn.get("type", "sale")
    items = [_item(line) for line in txn.get("lines") or []]
    props = {
        "channel": "pos",
        "partner": partner,
        "store_code": txn["store_code"],
        "txn_no": txn["txn_no"],
        "items": items,
        "rx": any(i["rx"] for i in items),
    }
    for wire, prop in (
        ("total_amount", "total_cny"),
        ("discount_amount", "discount_cny"),
        ("points_used", "points_used"),
        ("points_earned", "points_earned"),
        ("payment_method", "payment_method"),
        ("pharmacist_id", "pharmacist_id"),
    ):
        if txn.get(wire) is not None:
            props[prop] = txn[wire]
    if "total_cny" not in props and items:
        props["total_cny"] = round(sum(i["amount"] for i in items), 2)
    if txn.get("coupons"):
        props["coupon_codes"] = list(txn["coupons"])
    prescriptions = sorted({i["prescription_id"] for i in items if i["prescription_id"]})
    if prescriptions:
        props["prescription_ids"] = prescriptions
    if kind == "sale":
        name, mid = "pos_purchase", purchase_id(txn["store_code"], txn["txn_no"])
        traits.update(refill_traits(items, at))
    else:
        name = "pos_reversal"
        mid = message_id("pos", kind, txn["store_code"], txn["txn_no"])
        props.update(reversal_type=kind, orig_txn_no=txn["orig_txn_no"])
        props["refund_cny"] = props.pop("total_cny", 0)
    message = {
        "type": "track",
        "event": name,
        "messageId": mid,
        "timestamp": at.isoformat(),
        "properties": props,
        "context": {"externalIds": ids, "channel": "pos"},
    }
    if traits:
        message["traits"] = traits
    return message


def parse_transactions(payload: dict, partner: str) -> tuple[list[dict], list[dict], list[int]]:
    """(canonical messages, skipped, positions) of a request body; TransactionError if any
    transaction is invalid. ``skipped`` lists transactions that name no member (kept out: no
    profile to attach them to); ``positions[i]`` is the transaction index of message i.
    """
    if not isinstance(payload, dict):
        raise TransactionError("(body)", "must be a JSON object with a transactions array")
    transactions = payload.get("transactions")
    times = validate(transactions)
    messages, skipped, positions = [], [], []
    for i, (txn, at) in enumerate(zip(transactions, times, strict=True)):
        message = parse_transaction(txn, at, partner)
        if message is None:
            skipped.append(
                {"index": i, "txn_no": txn["txn_no"], "reason": "no member card or phone"}
            )
        else:
            messages.append(message)
            positions.append(i)
    return messages, skipped, positions
