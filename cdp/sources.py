"""Sources: the kinds connectors register, and creating, finding and reading sources.

A kind is a small class registered by a connector package; `cdp` only knows the
registry, so the core never imports the connectors that extend it.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Mapping

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

    # Pull connectors override these three: the UI's "Sync now" button uses them.
    def can_pull(self, source: Source) -> bool:
        return False

    def start_pull(self, actor: Actor, source: Source):
        """Queue a pull of ``source`` now (audited); returns its JobRun."""
        raise ValidationFailed(f"sources of kind {self.name} are pushed to, not pulled", "kind")

    def latest_pull(self, source: Source):
        """The newest JobRun pulling ``source`` (on demand or scheduled), or None."""
        return None


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
    """Check options against the kind's schema; the error names the option (``options.<key>``).

    The message never repeats the value of a secret option: it ends up in pages and terminals.
    """
    validator = jsonschema.Draft202012Validator(kind.options_schema)
    error = next(iter(sorted(validator.iter_errors(options), key=lambda e: e.path)), None)
    if error is None:
        return
    path = [str(p) for p in error.absolute_path]
    if not path and error.validator == "required":
        path = [next(name for name in error.validator_value if name not in error.instance)]
    field = ".".join(["options", *path])
    message = error.message
    if path and path[0] in kind.secret_options and isinstance(error.instance, str):
        message = message.replace(repr(error.instance), "the value")
    raise ValidationFailed(f"{field}: {message}", field)


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


def update_source(
    actor: Actor,
    source_id: str,
    name: str,
    options: dict,
    default_profile_kind: str,
    enabled: bool,
) -> Source:
    """Change a source's name, options and state; a secret option left out keeps its value.

    ``options`` replaces the stored ones, except that secrets cannot be read back to be sent
    again: an absent secret keeps the stored value. Connectors see the change within seconds
    (they cache a source briefly). The audit entry names the changed options, never values.
    """
    require(actor, "sources:edit")
    if default_profile_kind not in PROFILE_KINDS:
        raise ValidationFailed(
            f"default_profile_kind must be one of {', '.join(PROFILE_KINDS)}",
            "default_profile_kind",
        )
    name = (name or "").strip()
    if not name or len(name) > 120:
        raise ValidationFailed("name is required (at most 120 characters)", "name")
    with transaction():
        source = get_source(source_id)
        kind = get_kind(source.kind)
        old = source_options(source)
        new = dict(options)
        for key in kind.secret_options:
            if key not in new and key in old:
                new[key] = old[key]
        validate_options(kind, new)
        changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        source.name = name
        source.default_profile_kind = default_profile_kind
        source.enabled = bool(enabled)
        source.options_encrypted = vault().encrypt_json(new, source.id.encode())
        audit.record(
            actor,
            "source.update",
            "source",
            source.id,
            options_changed=changed,
            enabled=source.enabled,
            default_profile_kind=default_profile_kind,
        )
    forget_write_keys()
    return source


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


# Write keys recently matched to an enabled source, per process: the tracking API looks
# one up on every call, and the query cost a fifth of a single /v1/track. A change made in
# this process clears it; other processes see a rotated key or a disabled source within
# WRITE_KEY_CACHE_SECONDS.
WRITE_KEY_CACHE_SECONDS = 2.0
_by_write_key: dict[bytes, tuple[float, Source]] = {}


def forget_write_keys() -> None:
    _by_write_key.clear()


def source_for_write_key(write_key: str) -> Source | None:
    """The enabled source whose write key this is, or None (a detached, read-only Source)."""
    digest = hashlib.sha256(write_key.encode()).digest()
    now = time.monotonic()
    cached = _by_write_key.get(digest)
    if cached is not None and cached[0] > now:
        return cached[1]
    prefix = match_secret(write_key, WRITE_KEY_PREFIX)
    if prefix is None:
        return None
    source = db.session.scalar(sa.select(Source).where(Source.write_key_prefix == prefix))
    if source is None or not source.enabled or not secret_matches(write_key, source.write_key_hash):
        return None
    db.session.expunge(source)
    if len(_by_write_key) > 1000:
        _by_write_key.clear()
    _by_write_key[digest] = (now + WRITE_KEY_CACHE_SECONDS, source)
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
    forget_write_keys()
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


def _bounded_count(query: sa.Select, cap: int) -> int:
    return db.session.scalar(
        sa.select(sa.func.count()).select_from(query.limit(cap + 1).subquery())
    )


def source_figures(sources: list[Source], cap: int = 10_000) -> dict[str, dict]:
    """Cheap figures for pages that load often: the last event kept on the source, and event
    and violation counts that stop at ``cap`` (``events_capped``: there are more).

    Each count reads at most ``cap`` + 1 entries of an index that starts with ``source_id``,
    so a page costs the same with ten thousand events or a billion (``source_stats`` counts
    them all).
    """
    figures = {}
    for source in sources:
        events = _bounded_count(sa.select(Event.source_id).where(Event.source_id == source.id), cap)
        violations = _bounded_count(
            sa.select(Violation.source_id).where(Violation.source_id == source.id), cap
        )
        figures[source.id] = {
            "last_event_at": source.last_event_at,
            "events": min(events, cap),
            "events_capped": events > cap,
            "violations": min(violations, cap),
            "violations_capped": violations > cap,
        }
    return figures


# Connector packages know more about a source's health (request and error counters, recent
# refusals, pull cursors). cdp cannot import them, so one registers its functions here.
_health_hooks: dict[str, Callable] = {}


def register_health(detail: Callable[[str], dict], overview: Callable[[list], dict]) -> None:
    """``detail(source_id)``: one source's health; ``overview(source_ids)``: a summary each."""
    _health_hooks.update(detail=detail, overview=overview)


def connector_health(source_id: str) -> dict | None:
    """The registered health report of a source, or None when no connector provides one."""
    detail = _health_hooks.get("detail")
    return detail(source_id) if detail else None


def connector_health_overview(source_ids: list[str]) -> dict[str, dict]:
    """Health summaries (``status`` and a few figures) by source id; empty without a provider."""
    overview = _health_hooks.get("overview")
    return overview(source_ids) if overview and source_ids else {}


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
