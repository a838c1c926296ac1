"""What each kind of content holds, and the channel rules its (rendered) fields must follow.

Sources for the rules: ../shared/protocols/china-channels.md §3 (WeChat template messages:
keyword values <= 20 characters, no newlines, `first`/`remark` no longer shown; mini-program
subscribe messages: per-type value limits) and §8 (drug-advertising rules).
"""

from __future__ import annotations

import re
from functools import cache

import jsonschema

_FIELD_NAME = {"pattern": "^[A-Za-z][A-Za-z0-9_]{0,39}$"}
_TEXT = {"type": "string", "maxLength": 2000}
_ID = {"type": "string", "maxLength": 128}
_FIELDS = {
    "type": "object",
    "propertyNames": _FIELD_NAME,
    "additionalProperties": {"type": "string", "maxLength": 500},
    "maxProperties": 20,
}


def _object(properties: dict) -> dict:
    return {"type": "object", "additionalProperties": False, "properties": properties}


BODY_SCHEMAS: dict[str, dict] = {
    "wechat_template": _object(
        {
            "template_id": _ID,
            "url": {"type": "string", "maxLength": 1024},
            "miniprogram": _object(
                {"appid": {"type": "string", "maxLength": 64}, "pagepath": _TEXT}
            ),
            "fields": _FIELDS,
        }
    ),
    "miniprogram_subscribe": _object(
        {"template_id": _ID, "page": {"type": "string", "maxLength": 1024}, "fields": _FIELDS}
    ),
    "sms": _object({"text": {"type": "string", "maxLength": 1000}}),
    "article": _object(
        {
            "title": {"type": "string", "maxLength": 200},
            "summary": {"type": "string", "maxLength": 500},
            "html": {"type": "string", "maxLength": 200_000},
        }
    ),
    "miniprogram_link": _object(
        {
            "appid": {"type": "string", "maxLength": 64},
            "path": {"type": "string", "maxLength": 1024},
            "title": {"type": "string", "maxLength": 200},
        }
    ),
    "webhook": _object(
        {"url": {"type": "string", "maxLength": 1024}, "payload": {"type": "object"}}
    ),
}
# Needed before a version can be submitted for review (drafts may be incomplete).
REQUIRED: dict[str, tuple[str, ...]] = {
    "wechat_template": ("template_id", "fields"),
    "miniprogram_subscribe": ("template_id", "fields"),
    "sms": ("text",),
    "article": ("title", "html"),
    "miniprogram_link": ("appid", "path"),
    "webhook": ("payload",),
}
# The channels that can carry each kind of content.
KIND_CHANNELS: dict[str, tuple[str, ...]] = {
    "wechat_template": ("wechat",),
    "miniprogram_subscribe": ("miniprogram",),
    "sms": ("sms",),
    "article": ("wechat", "miniprogram"),
    "miniprogram_link": ("wechat", "miniprogram"),
    "webhook": ("webhook",),
}
# Template strings of a body: rendered with the profile and journey context.
TEMPLATE_KEYS: dict[str, tuple[str, ...]] = {
    "wechat_template": ("url",),
    "miniprogram_subscribe": ("page",),
    "sms": ("text",),
    "article": ("title", "summary", "html"),
    "miniprogram_link": ("path", "title"),
    "webhook": ("url",),
}


@cache
def _validator(kind: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(BODY_SCHEMAS[kind])


def body_problems(kind: str, body: dict, complete: bool) -> list[tuple[str, str]]:
    """(field, message) for each way ``body`` is malformed (or incomplete, when ``complete``)."""
    if kind not in BODY_SCHEMAS:
        return [("kind", f"unknown content kind '{kind}'")]
    if not isinstance(body, dict):
        return [("body", "must be an object")]
    problems = []
    for error in _validator(kind).iter_errors(body):
        path = ".".join(["body", *[str(p) for p in error.absolute_path]])
        problems.append((path, error.message))
    if complete:
        for key in REQUIRED[kind]:
            if body.get(key) in (None, "", {}, []):
                problems.append((f"body.{key}", f"{key} is required"))
    return problems


# --- Channel field rules ---------------------------------------------------------------------

WECHAT_FIELD_LIMIT = 20
WECHAT_DROPPED_FIELDS = ("first", "remark")
_CJK = re.compile(r"[\u3400-\u9fff]")
_SUBSCRIBE_KEY = re.compile(
    r"^(thing|number|letter|symbol|character_string|time|date|amount|phone_number|car_number"
    r"|name|phrase)(\d+)$"
)
_AMOUNT = re.compile(r"^[¥$€£]?\d{1,10}(?:\.\d{1,2})?元?$")
_SUBSCRIBE_RULES = {  # type -> (max length, allowed characters or None)
    "thing": (20, None),
    "number": (32, re.compile(r"^[0-9.]+$")),
    "letter": (32, re.compile(r"^[A-Za-z]+$")),
    "symbol": (5, None),
    "character_string": (32, re.compile(r"^[0-9A-Za-z_\-.:]+$")),
    "phone_number": (17, re.compile(r"^[0-9+\- ()]+$")),
    "car_number": (8, None),
    "time": (64, None),
    "date": (64, None),
}


def subscribe_field_type(key: str) -> str | None:
    match = _SUBSCRIBE_KEY.match(key)
    return match.group(1) if match else None


def template_key_problems(kind: str, fields: dict) -> list[tuple[str, str]]:
    """Field names the channel does not accept (checked before anything is rendered)."""
    problems = []
    for key in fields:
        if kind == "wechat_template" and key in WECHAT_DROPPED_FIELDS:
            problems.append(
                (f"body.fields.{key}", f"WeChat no longer shows '{key}' (since 2023-05-04)")
            )
        if kind == "miniprogram_subscribe" and subscribe_field_type(key) is None:
            problems.append(
                (f"body.fields.{key}", "name must be <type><n>, e.g. thing1, date2, amount3")
            )
    return problems


def _subscribe_value_problem(kind: str, value: str) -> str | None:
    if kind == "name":
        limit = 10 if _CJK.search(value) else 20
        return None if len(value) <= limit else f"a name is at most {limit} characters"
    if kind == "phrase":
        ok = len(value) <= 5 and all(_CJK.match(c) for c in value)
        return None if ok else "a phrase is at most 5 Chinese characters"
    if kind == "amount":
        return None if _AMOUNT.match(value) else "an amount is a number of up to 10 digits"
    limit, pattern = _SUBSCRIBE_RULES[kind]
    if len(value) > limit:
        return f"{kind} values are at most {limit} characters"
    if pattern is not None and not pattern.match(value):
        return f"not a valid {kind} value"
    return None


def rendered_field_problems(kind: str, fields: dict[str, str]) -> list[tuple[str, str]]:
    """Problems of rendered template-message values (what the provider would refuse)."""
    problems = []
    for key, value in fields.items():
        where = f"body.fields.{key}"
        if not value.strip():
            problems.append((where, "renders empty"))
        elif kind == "wechat_template":
            if "\n" in value or "\r" in value:
                problems.append((where, "WeChat template values cannot contain line breaks"))
            elif len(value) > WECHAT_FIELD_LIMIT:
                problems.append((where, f"renders longer than {WECHAT_FIELD_LIMIT} characters"))
        elif kind == "miniprogram_subscribe":
            problem = _subscribe_value_problem(subscribe_field_type(key) or "thing", value)
            if problem:
                problems.append((where, problem))
    return problems


# --- SMS ---------------------------------------------------------------------------------------

SMS_MAX_LENGTH = 500
_SIGNATURE = re.compile(r"^\s*【[^【】\s]{2,16}】|【[^【】\s]{2,16}】\s*$")
_OPT_OUT = re.compile(r"(?:回复?|发送?)\s*(?:TD|T)\s*退订|退订\s*(?:请)?回复?\s*(?:TD|T)\b", re.I)


def sms_problems(text: str, category: str) -> list[tuple[str, str]]:
    """Sender signature 【…】 always; marketing texts also an opt-out instruction (回T退订)."""
    problems = []
    if not _SIGNATURE.search(text or ""):
        problems.append(("body.text", "an SMS must carry the sender signature, e.g. 【康护】"))
    if category == "marketing" and not _OPT_OUT.search(text or ""):
        problems.append(("body.text", "a marketing SMS must say how to opt out, e.g. 回T退订"))
    if len(text or "") > SMS_MAX_LENGTH:
        problems.append(("body.text", f"an SMS is at most {SMS_MAX_LENGTH} characters"))
    return problems
