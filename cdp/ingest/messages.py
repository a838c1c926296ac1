"""Turn one canonical message into what the pipeline stores, or say which field is wrong."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import jsonschema
import orjson

from cdp.exceptions import ValidationFailed
from cdp.identity.blocklist import BlockList
from cdp.identity.traits import split_traits
from cdp.identity.types import Identifier, make_identifier
from cdp.pii import PiiVault

MAX_EVENT_BYTES = 32 * 1024
# Keys never stored in clear in an event's properties or context (they are personal data).
SCRUBBED_KEYS = frozenset(
    {"phone", "mobile", "email", "address", "idCard", "id_card", "idNumber", "id_number", "ip"}
)


class Rejected(Exception):
    def __init__(self, field_path: str, reason: str):
        super().__init__(reason)
        self.field = field_path
        self.reason = reason


@dataclass
class Candidate:
    index: int
    message: dict
    message_id: str
    type: str
    name: str | None
    timestamp: datetime
    identifiers: list[Identifier]
    link_only: frozenset = frozenset()
    traits: dict = field(default_factory=dict)
    pii: dict = field(default_factory=dict)
    properties: dict = field(default_factory=dict)
    context: dict = field(default_factory=dict)
    kind: str | None = None
    notes: list[tuple[str, str]] = field(default_factory=list)  # (field, reason) to flag
    profile_id: int | None = None
    received_at: datetime | None = None  # when it differs from its batch's (grouped batches)


@cache
def message_validator() -> jsonschema.Draft202012Validator:
    schema = json.loads((Path(__file__).parent / "message.schema.json").read_text())
    return jsonschema.Draft202012Validator(schema)


def _path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else ""
        parts.append(missing)
    return ".".join(p for p in parts if p) or "(message)"


def validate_shape(message) -> None:
    if not isinstance(message, dict):
        raise Rejected("(message)", "each event must be a JSON object")
    # jsonschema costs ~100 µs a message; the hand-written check below accepts only messages
    # the schema accepts too, so jsonschema runs just for the rest and words every rejection.
    if not plainly_valid(message):
        error = jsonschema.exceptions.best_match(message_validator().iter_errors(message))
        if error is not None:
            raise Rejected(_path(error), error.message)
    # Kept per message: it costs ~0.3 µs, and a batch body under 32 KB would not prove every
    # message is (orjson may write a number longer than it was sent: 1e9 -> 1000000000.0).
    if len(orjson.dumps(message)) > MAX_EVENT_BYTES:
        raise Rejected("(message)", "event is larger than 32 KB")


# -- the fast shape check: mirrors message.schema.json; False means "ask jsonschema" ------------
# Same type tests as jsonschema's (bool is not an integer); floats that are whole numbers,
# which jsonschema counts as integers, are left to it.
_TYPES = frozenset({"identify", "track", "page", "screen", "group", "alias"})
_REQUIRED_BY_TYPE = {"track": ("event",), "alias": ("previousId", "userId"), "group": ("groupId",)}


def _is_id(value) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _text(min_length: int, max_length: int):
    return lambda v: isinstance(v, str) and min_length <= len(v) <= max_length


def _optional_text(v) -> bool:
    return v is None or (isinstance(v, str) and len(v) <= 200)


def _is_object(v) -> bool:
    return isinstance(v, dict)


def _is_string(v) -> bool:
    return isinstance(v, str)


_collection = _text(0, 64)


def _external_id(item) -> bool:
    if not isinstance(item, dict) or "type" not in item or "id" not in item:
        return False
    return (
        isinstance(item["type"], str)
        and 1 <= len(item["type"]) <= 32
        and _is_id(item["id"])
        and ("collection" not in item or _collection(item["collection"]))
        and ("encoding" not in item or isinstance(item["encoding"], str))
    )


def _external_ids(v) -> bool:
    return isinstance(v, list) and len(v) <= 50 and all(_external_id(item) for item in v)


_CONTEXT_CHECKS = {
    "traits": _is_object,
    "externalIds": _external_ids,
    "profileKind": lambda v: isinstance(v, str) and v in ("patient", "hcp"),
    "device": _is_object,
}


def _context(v) -> bool:
    if not isinstance(v, dict):
        return False
    return all(check(v[key]) for key, check in _CONTEXT_CHECKS.items() if key in v)


_CHECKS = {
    "messageId": _text(1, 100),
    "userId": _is_id,
    "anonymousId": _is_id,
    "previousId": _is_id,
    "groupId": _is_id,
    "event": _text(1, 200),
    "name": _optional_text,
    "category": _optional_text,
    "properties": _is_object,
    "traits": _is_object,
    "context": _context,
    "integrations": _is_object,
    # "format": "date-time" is an annotation only (no format checker); parse_time checks them.
    "timestamp": _is_string,
    "originalTimestamp": _is_string,
    "sentAt": _is_string,
    "receivedAt": _is_string,
}


def plainly_valid(message: dict) -> bool:
    """True only if message.schema.json accepts ``message`` (False: maybe not, check fully)."""
    type_ = message.get("type")
    if not isinstance(type_, str) or type_ not in _TYPES:
        return False
    if any(key not in message for key in _REQUIRED_BY_TYPE.get(type_, ())):
        return False
    return all(check(message[key]) for key, check in _CHECKS.items() if key in message)


def parse_time(message: dict, key: str) -> datetime | None:
    raw = message.get(key)
    if raw in (None, ""):
        return None
    try:
        value = datetime.fromisoformat(str(raw))
    except ValueError:
        raise Rejected(key, f"'{raw}' is not an ISO 8601 date-time") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def event_time(message: dict, received_at: datetime) -> datetime:
    """The event's time, corrected for the sender's clock skew the way Segment does it.

    timestamp = receivedAt - (sentAt - originalTimestamp): the client's offset between
    recording and sending is trusted, its absolute clock is not.
    """
    stamped = parse_time(message, "timestamp") or parse_time(message, "originalTimestamp")
    sent = parse_time(message, "sentAt")
    if stamped is None:
        return received_at
    if sent is None:
        return stamped.astimezone(UTC)
    return received_at - (sent - stamped)


def _scrub(value):
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items() if k not in SCRUBBED_KEYS}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


class Preparer:
    """Prepares messages of one source with one vault and block list."""

    def __init__(self, vault: PiiVault, blocklist: BlockList, received_at: datetime):
        self.vault = vault
        self.blocklist = blocklist
        self.received_at = received_at

    def prepare(self, index: int, message) -> Candidate:
        validate_shape(message)
        context = dict(message.get("context") or {})
        traits = {**(context.pop("traits", None) or {}), **(message.get("traits") or {})}
        plain, personal = split_traits(traits)
        candidate = Candidate(
            index=index,
            message=message,
            message_id=str(message.get("messageId") or f"cdp-{uuid.uuid4()}"),
            type=message["type"],
            name=message.get("event") or message.get("name"),
            timestamp=event_time(message, self.received_at),
            identifiers=[],
            traits=plain,
            pii=personal,
            kind=context.get("profileKind"),
        )
        self._identifiers(candidate, message, context, personal)
        if not candidate.identifiers and not candidate.link_only:
            if not candidate.notes:
                raise Rejected("userId", "userId, anonymousId or context.externalIds is required")
        external = context.pop("externalIds", None)
        candidate.context = _scrub(context)
        candidate.properties = _scrub(dict(message.get("properties") or {}))
        if candidate.type in ("identify", "group") and plain:
            candidate.properties = {**candidate.properties, "traits": _scrub(plain)}
        if candidate.type == "group":
            candidate.properties["group_id"] = str(message["groupId"])
        if external:
            candidate.context["externalIdTypes"] = sorted({str(e.get("type")) for e in external})
        return candidate

    def check(self, index: int, message) -> Candidate:
        """Reject what ``prepare`` would reject, without resolving identifiers (deferred mode).

        ``prepare`` rejects a message whose shape or times are wrong, or that carries no
        identifier field at all; an identifier field with a bad value is only flagged, and
        that is found when the message is prepared for storing. The candidate has no
        identifiers, traits or properties.
        """
        validate_shape(message)
        timestamp = event_time(message, self.received_at)
        if not _names_someone(message):
            raise Rejected("userId", "userId, anonymousId or context.externalIds is required")
        return Candidate(
            index=index,
            message=message,
            message_id=str(message.get("messageId") or f"cdp-{uuid.uuid4()}"),
            type=message["type"],
            name=message.get("event") or message.get("name"),
            timestamp=timestamp,
            identifiers=[],
        )

    def _add(self, candidate: Candidate, path: str, type_: str, value, namespace=None, link=False):
        try:
            ident = make_identifier(self.vault, type_, value, namespace)
        except ValidationFailed as exc:
            candidate.notes.append((path, exc.message))
            return
        if self.blocklist.blocks(type_, ident.value):
            candidate.notes.append((path, f"{type_} value is on the block list: not used to link"))
            return
        candidate.identifiers.append(ident)
        if link:
            candidate.link_only = candidate.link_only | {ident.key}

    def _identifiers(self, candidate: Candidate, message: dict, context: dict, personal: dict):
        if message.get("userId") not in (None, ""):
            self._add(candidate, "userId", "user_id", message["userId"])
        if message.get("anonymousId") not in (None, ""):
            self._add(candidate, "anonymousId", "anonymous_id", message["anonymousId"])
        if candidate.type == "alias":
            # previousId is an earlier userId or anonymousId: link whichever exists, create neither.
            for type_ in ("user_id", "anonymous_id"):
                self._add(candidate, "previousId", type_, message["previousId"], link=True)
        for key in ("phone", "mobile"):
            if personal.get(key):
                self._add(candidate, f"traits.{key}", "phone", personal[key])
        if personal.get("email"):
            self._add(candidate, "traits.email", "email", personal["email"])
        device = context.get("device") or {}
        if isinstance(device, dict) and device.get("id"):
            self._add(candidate, "context.device.id", "device_id", device["id"])
        for i, ext in enumerate(context.get("externalIds") or []):
            self._add(
                candidate, f"context.externalIds.{i}", ext["type"], ext["id"], ext.get("collection")
            )


def _names_someone(message: dict) -> bool:
    """Does a (shape-valid) message carry any identifier field ``Preparer._identifiers`` reads?"""
    if message.get("userId") not in (None, "") or message.get("anonymousId") not in (None, ""):
        return True
    if message["type"] == "alias":
        return True  # previousId is required by the schema
    context = message.get("context") or {}
    traits = {**(context.get("traits") or {}), **(message.get("traits") or {})}
    if traits.get("phone") or traits.get("mobile") or traits.get("email"):
        return True
    device = context.get("device")
    return bool((isinstance(device, dict) and device.get("id")) or context.get("externalIds"))
