"""Shared pieces: names, dates and horizons as users type them, and fast columnar reads."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import sqlalchemy as sa

from cdp.db import db
from cdp.exceptions import ValidationFailed

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")
NAME_RULE = "1 to 80 letters, digits, '_', '-' or '.', starting with a letter or digit"
HORIZON = re.compile(r"^\s*(\d{1,4})\s*([dw]?)\s*$")
MAX_HORIZON_DAYS = 730
FETCH_ROWS = 200_000  # rows per round trip when reading events into arrays
DAY = 86400.0
DIRECT_IDS, DIRECT_IDS_PER_ROW = 10_000_000, 4  # bounds of RowIndex's direct table (40 MB)

Progress = Callable[[int, int, str], None]


def check_name(name: str) -> str:
    name = (name or "").strip()
    if not NAME.match(name):
        raise ValidationFailed(f"model name must be {NAME_RULE}", "name")
    return name


def parse_horizon(text) -> int:
    """Days in a horizon such as ``90d``, ``12w`` or ``30``."""
    match = HORIZON.match(str(text))
    if not match:
        raise ValidationFailed("horizon must look like 90d, 12w or 30 (days)", "horizon")
    days = int(match.group(1)) * (7 if match.group(2) == "w" else 1)
    if not 1 <= days <= MAX_HORIZON_DAYS:
        raise ValidationFailed(f"horizon must be between 1 and {MAX_HORIZON_DAYS} days", "horizon")
    return days


def local_midnight(day: date | str, timezone: str, field: str = "cutoff") -> datetime:
    """The instant a local calendar day starts (``YYYY-MM-DD`` in the platform time zone)."""
    if isinstance(day, str):
        try:
            day = date.fromisoformat(day.strip())
        except ValueError:
            raise ValidationFailed(f"{field} must be a date: YYYY-MM-DD", field) from None
    return datetime.combine(day, time.min, tzinfo=ZoneInfo(timezone)).astimezone(UTC)


def days_between(later: datetime, earlier: datetime) -> float:
    return (later - earlier) / timedelta(days=1)


def epoch_seconds(column, dialect: str):
    """A timestamp column as float seconds since 1970 (UTC), computed by the database."""
    if dialect == "postgresql":
        return sa.func.extract("epoch", column)
    # SQLite stores UTC text; julianday() parses it in C.
    return (sa.func.julianday(column) - 2440587.5) * DAY


def fetch(statement, columns: int) -> np.ndarray:
    """All rows of a numeric SELECT as a float64 array (no NULLs allowed).

    Rows are read from the driver's cursor in large batches: building a Row object per
    event would cost more than the query itself, and numeric columns need no conversion.
    """
    result = db.session.connection().execute(statement)
    cursor, parts = result.cursor, []
    try:
        while rows := cursor.fetchmany(FETCH_ROWS):
            flat = itertools.chain.from_iterable(rows)
            parts.append(
                np.fromiter(flat, dtype=np.float64, count=len(rows) * columns).reshape(-1, columns)
            )
    finally:
        result.close()
    return np.concatenate(parts) if parts else np.empty((0, columns))


def fetch_rows(statement) -> list[tuple]:
    """All rows as plain tuples straight from the driver (no Row objects): columns whose
    values need no conversion only (numbers, text)."""
    result = db.session.connection().execute(statement)
    try:
        return result.cursor.fetchall()
    finally:
        result.close()


def dialect() -> str:
    return db.session.get_bind().dialect.name


class RowIndex:
    """Maps profile ids to row numbers of the feature frame."""

    def __init__(self, ids: np.ndarray):
        self.ids, self.n = ids, len(ids)
        # Ids are dense in practice: a direct id -> row table (4 bytes per id up to the
        # largest) maps the events pass's 9 M ids ten times faster than a binary search.
        self.lookup = None
        if self.n and 0 <= ids[0] and ids[-1] < DIRECT_IDS_PER_ROW * self.n + DIRECT_IDS:
            self.lookup = np.full(int(ids[-1]) + 1, -1, np.int32)
            self.lookup[ids] = np.arange(self.n, dtype=np.int32)

    def rows(self, pids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row numbers, mask of the ids that are in the population)."""
        if self.n == 0:
            return np.zeros(0, np.int64), np.zeros(len(pids), bool)
        if self.lookup is not None:
            inside = (pids >= 0) & (pids < len(self.lookup))
            pos = np.where(inside, self.lookup[np.where(inside, pids, 0)], -1)
            found = pos >= 0
            return pos[found].astype(np.int64), found
        pos = np.clip(np.searchsorted(self.ids, pids), 0, self.n - 1)
        found = self.ids[pos] == pids
        return pos[found], found

    def count(self, rows, mask=None, weights=None) -> np.ndarray:
        rows = rows if mask is None else rows[mask]
        w = None if weights is None else (weights if mask is None else weights[mask])
        return np.bincount(rows, weights=w, minlength=self.n).astype(np.float64)

    def table(self, keys: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """Counts of ``row * size + cell`` keys as an (n, *shape) array."""
        size = int(np.prod(shape))
        return np.bincount(keys, minlength=self.n * size).reshape(self.n, *shape)

    def minimum(self, rows, values, empty=np.nan) -> np.ndarray:
        out = np.full(self.n, np.inf)
        np.minimum.at(out, rows, values)
        out[np.isinf(out)] = empty
        return out

    def maximum(self, rows, values, empty=np.nan) -> np.ndarray:
        out = np.full(self.n, -np.inf)
        np.maximum.at(out, rows, values)
        out[np.isinf(out)] = empty
        return out
