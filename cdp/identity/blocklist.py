"""Junk identifier values (test phones, shared till cards, "null") that must never link people."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

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

    def blocks(self, type_: str, value: str) -> bool:
        folded = value.strip().lower()
        for scope in (None, type_):
            if folded in self.exact.get(scope, ()) or value in self.exact.get(scope, ()):
                return True
        return any(
            (scope is None or scope == type_) and pattern.search(value)
            for scope, pattern in self.patterns
        )


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
