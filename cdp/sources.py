"""Sources: the kinds connectors register, and creating, finding and reading sources.

A kind is a small class registered by a connector package; `cdp` only knows the
registry, so the core never imports the connectors that extend it.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping

import jsonschema
import orjson
import sqlalchemy as sa

from cdp import audit
from cdp.actors import Actor
from cdp.auth.permissions import require
from cdp.auth.tokens import generate_secret, match_secret, secret_matches
from cdp.db import db, transaction
from cdp.exceptions import Conflict, NotFound, ValidationFailed
from cdp.models.events import Event
from cdp.models.ingest import Violation
from cdp.models.profiles import PROFILE_KINDS
from cdp.models.sources import Source
from cdp.pii import vault

WRITE_KEY_PREFIX = "wk_"


class SourceKind:
    """What a connector declares about its sources; subclass and ``register_kind``."""

    name: str = ""
    label: str = ""
    has_write_key: bool = False
    # JSON Schema of the options; properties listed in ``secret_options`` are masked on output.
    options_schema: Mapping = {"type": "object", "additionalProperties": False}
    secret_options: tuple[str, ...] = ()

    def endpoint_urls(self, base_url: str, source: Source) -> dict[str, str]:
        return {}


SOURCE_KINDS: dict[str, SourceKind] = {}


def register_kind(kind: SourceKind) -> SourceKind:
    SOURCE_KINDS[kind.name] = kind
    return kind


def get_kind(name: str) -> SourceKind:
    try:
        return SOURCE_KINDS[name]
    except KeyError:
        known = ", ".join(sorted(SOURCE_KINDS)) or "none registered"
        raise ValidationFailed(f"unknown source kind '{name}' (known: {known})", "kind") from None


def validate_options(kind: SourceKind, options: dict) -> None:
    validator = jsonschema.Draft202012Validator(kind.options_schema)
    error = next(iter(sorted(validator.iter_errors(options), key=lambda e: e.path)), None)
    if error is not None:
        path = ".".join(str(p) for p in error.absolute_path)
        field = "options" + (f".{path}" if path else "")
        raise ValidationFailed(f"{field}: {error.message}", field)


def create_source(
    actor: Actor,
    name: str,
    kind_name: str,
    options: dict | None = None,
    default_profile_kind: str = "patient",
) -> tuple[Source, str | None]:
    """Create a source; return it with its write key (shown once) when the kind has one."""
    require(actor, "sources:edit")
    kind = get_kind(kind_name)
    if default_profile_kind not in PROFILE_KINDS:
        raise ValidationFailed(
            f"default_profile_kind must be one of {', '.join(PROFILE_KINDS)}",
            "default_profile_kind",
        )
    options = options or {}
    validate_options(kind, options)
    name = (name or "").strip()
    if not name or len(name) > 120:
        raise ValidationFailed("name is required (at most 120 characters)", "name")
    write_key = prefix = digest = None
    if kind.has_write_key:
        write_key, prefix, digest = generate_secret(WRITE_KEY_PREFIX)
    source_id = "src_" + secrets.token_hex(8)
    with transaction() as session:
        source = Source(
            id=source_id,
            name=name,
            kind=kind.name,
            options_encrypted=vault().encrypt_json(options, source_id.encode()),
            write_key_prefix=prefix,
            write_key_hash=digest,
            default_profile_kind=default_profile_kind,
            created_by_id=actor.user_id,
        )
        session.add(source)
        audit.record(
            actor,
            "source.create",
            "source",
            source.id,
            kind=kind.name,
            default_profile_kind=default_profile_kind,
        )
    return source, write_key


def source_options(source: Source) -> dict:
    if not source.options_encrypted:
        return {}
    return vault().decrypt_json(source.options_encrypted, source.id.encode())


def masked_options(source: Source) -> dict:
    kind = SOURCE_KINDS.get(source.kind)
    secret = set(kind.secret_options) if kind else set()
    return {k: ("--------" if k in secret else v) for k, v in source_options(source).items()}


def endpoint_urls(source: Source, base_url: str) -> dict[str, str]:
    kind = SOURCE_KINDS.get(source.kind)
    return kind.endpoint_urls(base_url.rstrip("/"), source) if kind else {}


def get_source(source_id: str) -> Source:
    source = db.session.get(Source, source_id)
    if source is None:
        raise NotFound("no such source", "source_id")
    return source


def list_sources() -> list[Source]:
    return list(db.session.scalars(sa.select(Source).order_by(Source.created_at)))


def source_for_write_key(write_key: str) -> Source | None:
    """The enabled source whose write key this is, or None."""
    prefix = match_secret(write_key, WRITE_KEY_PREFIX)
    if prefix is None:
        return None
    source = db.session.scalar(sa.select(Source).where(Source.write_key_prefix == prefix))
    if source is None or not source.enabled or not secret_matches(write_key, source.write_key_hash):
        return None
    return source


def rotate_write_key(actor: Actor, source_id: str) -> tuple[Source, str]:
    """Give a source a new write key (shown once); the old key stops working at once."""
    require(actor, "sources:edit")
    with transaction():
        source = get_source(source_id)
        kind = SOURCE_KINDS.get(source.kind)
        if not (kind and kind.has_write_key) and source.write_key_hash is None:
            raise Conflict("this kind of source has no write key", "source_id")
        write_key, prefix, digest = generate_secret(WRITE_KEY_PREFIX)
        source.write_key_prefix = prefix
        source.write_key_hash = digest
        audit.record(actor, "source.rotate_key", "source", source.id)
    return source, write_key


def source_stats(source_ids: list[str]) -> dict[str, dict]:
    """Events, violations and the last event received per source: one GROUP BY per table."""
    stats = {sid: {"events": 0, "violations": 0, "last_event_at": None} for sid in source_ids}
    if not source_ids:
        return stats
    for sid, events, last in db.session.execute(
        sa.select(Event.source_id, sa.func.count(), sa.func.max(Event.received_at))
        .where(Event.source_id.in_(source_ids))
        .group_by(Event.source_id)
    ):
        stats[sid].update(events=events, last_event_at=last)
    for sid, violations in db.session.execute(
        sa.select(Violation.source_id, sa.func.count())
        .where(Violation.source_id.in_(source_ids))
        .group_by(Violation.source_id)
    ):
        stats[sid]["violations"] = violations
    return stats


def list_violations(
    source_id: str | None = None, before_id: int | None = None, limit: int = 50
) -> list[Violation]:
    """Violations newest first (keyset-paged on id); callers must not show the payload."""
    query = sa.select(Violation).order_by(Violation.id.desc()).limit(limit)
    if source_id:
        query = query.where(Violation.source_id == source_id)
    if before_id:
        query = query.where(Violation.id < before_id)
    return list(db.session.scalars(query))


def get_violation(violation_id: int) -> Violation:
    violation = db.session.get(Violation, violation_id)
    if violation is None:
        raise NotFound("no such violation", "violation_id")
    return violation


def reveal_violation_payload(actor: Actor, violation_id: int) -> tuple[Violation, object]:
    """Decrypt the message a violation kept (it may hold personal data); every view is audited."""
    require(actor, "violations:payload")
    violation = get_violation(violation_id)
    payload = None
    if violation.payload_encrypted is not None:
        payload = orjson.loads(
            vault().decrypt(violation.payload_encrypted, violation.source_id.encode())
        )
    with transaction():
        audit.record(
            actor,
            "violation.payload_view",
            "violation",
            violation.id,
            source_id=violation.source_id,
        )
    return violation, payload
