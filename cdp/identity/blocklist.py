"""Junk identifier values (test phones, shared till cards, "null") that must never link people."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import sqlalchemy as sa
from flask import current_app

from cdp.db import db
from cdp.models import BlockedIdentifier

_CACHE_SECONDS = 30.0


@dataclass
class BlockList:
    exact: dict[str | None, set[str]]
    patterns: list[tuple[str | None, re.Pattern]]
    loaded_at: float
    # Per identifier type: its exact values (with the untyped ones) and the patterns that apply.
    # Checked for every identifier of every event, so worked out once per type.
    _by_type: dict[str, tuple[frozenset, tuple]] = field(default_factory=dict, repr=False)

    def blocks(self, type_: str, value: str) -> bool:
        rules = self._by_type.get(type_)
        if rules is None:
            exact = frozenset(self.exact.get(None, ())) | frozenset(self.exact.get(type_, ()))
            patterns = tuple(p for scope, p in self.patterns if scope is None or scope == type_)
            rules = self._by_type[type_] = (exact, patterns)
        exact, patterns = rules
        if value in exact or value.strip().lower() in exact:
            return True
        return any(pattern.search(value) for pattern in patterns)


def current_blocklist() -> BlockList:
    """The app's block list, re-read from the database at most every 30 s."""
    cached = current_app.extensions.get("cdp.blocklist")
    if cached is None or time.monotonic() - cached.loaded_at > _CACHE_SECONDS:
        exact: dict[str | None, set[str]] = {}
        patterns = []
        for row in db.session.scalars(sa.select(BlockedIdentifier)):
            if row.is_regex:
                patterns.append((row.identifier_type, re.compile(row.pattern, re.IGNORECASE)))
            else:
                exact.setdefault(row.identifier_type, set()).add(row.pattern)
        cached = BlockList(exact, patterns, time.monotonic())
        current_app.extensions["cdp.blocklist"] = cached
    return cached


def forget_cached_blocklist() -> None:
    current_app.extensions.pop("cdp.blocklist", None)
