"""Partner pharmacy member sync: the POS/CRM wire formats, turned into canonical member rows.

Chains export members as JSON or as CSV (often GBK-encoded from Windows tools) with their
own column names; this module reads both and maps the usual aliases (``cardNumber``,
``mobile``, ``会员卡号``, ``手机号`` …) onto the canonical fields ``cdp.loyalty.members``
validates. Each row then goes through ingestion as an ``identify`` message on the
partner's source (kind ``pharmacy``), which this module registers.
"""

from __future__ import annotations

import csv
import io

import orjson
from flask import Flask

from cdp import loyalty
from cdp.exceptions import ValidationFailed
from cdp.loyalty.members import CONSENT_FLAGS, MAX_ROWS
from cdp.sources import SourceKind, register_kind

# POS column names -> canonical field (compared lower-cased, spaces and dashes as "_").
ALIASES = {
    "card_no": "card_no",
    "cardno": "card_no",
    "card_number": "card_no",
    "cardnumber": "card_no",
    "card_code": "card_no",
    "cardcode": "card_no",
    "member_card_no": "card_no",
    "member_no": "card_no",
    "会员卡号": "card_no",
    "卡号": "card_no",
    "phone": "phone",
    "mobile": "phone",
    "mobile_phone": "phone",
    "手机号": "phone",
    "手机": "phone",
    "name": "name",
    "姓名": "name",
    "gender": "gender",
    "sex": "gender",
    "性别": "gender",
    "birth_date": "birth_date",
    "birthday": "birth_date",
    "生日": "birth_date",
    "出生日期": "birth_date",
    "store_code": "store_code",
    "register_store_code": "store_code",
    "storeno": "store_code",
    "门店编码": "store_code",
    "joined_at": "joined_at",
    "register_time": "joined_at",
    "入会时间": "joined_at",
    "consents": "consents",
}
TRUE = {"1", "true", "yes", "y", "是", "同意"}
FALSE = {"0", "false", "no", "n", "否", "不同意"}


class PharmacySourceKind(SourceKind):
    name = "pharmacy"
    label = "Partner pharmacy member sync"
    options_schema = {
        "type": "object",
        "properties": {"partner_code": {"type": "string", "maxLength": 32}},
        "additionalProperties": False,
    }


def _key(name: str) -> str:
    return str(name).strip().lower().replace(" ", "_").replace("-", "_")


def _flag(value) -> bool | object:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    return value  # left as is: validation names it


def canonical_row(raw) -> dict | object:
    """Rename known aliases; ``consent_<flag>`` columns become ``consents``. Others pass through."""
    if not isinstance(raw, dict):
        return raw
    row: dict = {}
    consents = {}
    for name, value in raw.items():
        key = _key(name)
        if key.startswith("consent_") and key[8:] in CONSENT_FLAGS:
            if value not in (None, ""):
                consents[key[8:]] = _flag(value)
            continue
        row[ALIASES.get(key, str(name))] = value
    if consents:
        given = row.get("consents")
        if isinstance(given, str) and given.strip():
            try:
                given = orjson.loads(given)
            except orjson.JSONDecodeError:
                return row  # validation reports the bad JSON
        row["consents"] = {**(given if isinstance(given, dict) else {}), **consents}
    return row


def _decode(body: bytes) -> str:
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return body.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise ValidationFailed("the CSV file is neither UTF-8 nor GBK text", "file")


def parse_csv(body: bytes) -> list[dict]:
    text = _decode(body)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames:
        raise ValidationFailed("the CSV file has no header row", "file")
    rows = []
    for row in reader:
        if len(rows) > MAX_ROWS:
            break
        rows.append({k: (v.strip() if isinstance(v, str) else v) for k, v in row.items() if k})
    return [canonical_row(r) for r in rows]


def parse_json(body: bytes) -> list:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValidationFailed(f"the body is not valid JSON: {exc}", "members") from None
    if isinstance(data, dict) and isinstance(data.get("members"), list):
        data = data["members"]
    if not isinstance(data, list):
        raise ValidationFailed(
            'expected a JSON array of members (or {"members": [...]})', "members"
        )
    return [canonical_row(r) for r in data]


def parse_upload(body: bytes, content_type: str) -> tuple[list, str]:
    """(rows, "csv"|"json") of an upload body by its media type."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media in ("text/csv", "application/csv", "text/plain"):
        return parse_csv(body), "csv"
    if media in ("application/json", ""):
        return parse_json(body), "json"
    raise ValidationFailed(
        f"unsupported media type '{media[:60]}': send application/json or text/csv", "file"
    )


def init_app(app: Flask) -> None:
    """Register the pharmacy source kind and wire the loyalty domain (jobs, hooks)."""
    register_kind(PharmacySourceKind())
    loyalty.init_app(app)
