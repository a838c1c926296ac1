"""Sources: the kinds connectors register, and creating, finding and reading sources.

A kind is a small class registered by a connector package; `cdp` only knows the
registry, so the core never imports the connectors that extend it.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping

import jsonschema
import sqlalchemy as sa

from cdp import audit
from cdp.actors import Actor
from cdp.auth.permissions import require
from cdp.auth.tokens import generate_secret, match_secret, secret_matches
from cdp.db import db, transaction
from cdp.exceptions import NotFound, ValidationFailed
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
    actor: Actor, name: str, kind_name: str, options: dict | None = None
) -> tuple[Source, str | None]:
    """Create a source; return it with its write key (shown once) when the kind has one."""
    require(actor, "sources:edit")
    kind = get_kind(kind_name)
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
            created_by_id=actor.user_id,
        )
        session.add(source)
        audit.record(actor, "source.create", "source", source.id, kind=kind.name)
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
