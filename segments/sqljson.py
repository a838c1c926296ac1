"""Dialect-aware SQL pieces the compiler needs: JSON access, array elements, local dates.

SQLite (JSON1) and PostgreSQL (JSONB) spell these differently; everything else in the
compiler is plain SQLAlchemy Core. Every helper returns expressions whose meaning is the
same on both, as pinned down by ``segments.values`` (the Python side of each rule):

- ``json_type`` is one of string, number, true, false, null, object, array, or "missing";
- ``json_text`` / ``json_num`` are only meaningful when the type is string / number;
- string comparisons are by code point (PostgreSQL: ``COLLATE "C"``), like Python's.
"""

from __future__ import annotations

import re
from datetime import date, timedelta

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import UnaryExpression

KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MISSING = "missing"
_ISO_GLOB = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*"
_ISO_REGEX = "^[0-9]{4}-[0-9]{2}-[0-9]{2}"


def check_path(path: tuple[str, ...]) -> tuple[str, ...]:
    """Keys become part of the SQL text (JSON paths), so only plain identifiers are allowed."""
    for key in path:
        if not KEY.match(key):
            raise ValueError(f"invalid JSON key {key!r}")
    return path


SQLITE_TYPES = {"string": ("text",), "number": ("integer", "real")}


class Kind:
    """A JSON type expression in the database's own names, tested with our names."""

    def __init__(self, expr, names: dict[str, tuple[str, ...]] | None = None):
        self.expr, self.names = expr, names or {}

    def is_(self, *kinds: str):
        native = [name for kind in kinds for name in self.names.get(kind, (kind,))]
        return self.expr == native[0] if len(native) == 1 else self.expr.in_(native)


class SqlJson:
    """The helpers for one dialect ("sqlite" or "postgresql")."""

    def __init__(self, dialect: str):
        if dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported database dialect {dialect!r}")
        self.dialect = dialect
        self.pg = dialect == "postgresql"

    # -- values inside a JSON column (or a JSONB array element on PostgreSQL) -------------
    def _sqlite_path(self, path) -> str:
        return "$" + "".join(f'."{key}"' for key in check_path(path))

    def _pg_node(self, expr, path):
        if not path:
            return expr
        keys = sa.literal(list(check_path(path)), postgresql.ARRAY(sa.Text))
        return expr.op("#>", return_type=postgresql.JSONB)(keys)

    def json_type(self, expr, path: tuple[str, ...]) -> Kind:
        """The JSON type at ``path``; compare it with ``.is_("string", ...)`` (never NULL)."""
        if self.pg:
            node = self._pg_node(expr, path)
            raw = sa.func.jsonb_typeof(node)
            text = node.op("#>>", return_type=sa.Text)(sa.literal([], postgresql.ARRAY(sa.Text)))
            return Kind(sa.func.coalesce(sa.case((raw == "boolean", text), else_=raw), MISSING))
        # SQLite: one json_type() call, compared with its own names (a CASE mapping them to
        # ours would parse the JSON once per branch).
        return Kind(
            sa.func.coalesce(sa.func.json_type(expr, self._sqlite_path(path)), MISSING),
            SQLITE_TYPES,
        )

    def json_text(self, expr, path: tuple[str, ...]):
        if self.pg:
            return self._pg_node(expr, path).op("#>>", return_type=sa.Text)(
                sa.literal([], postgresql.ARRAY(sa.Text))
            )
        return sa.func.json_extract(expr, self._sqlite_path(path))

    def json_num(self, expr, path: tuple[str, ...], guarded: bool = True):
        """The number at ``path``, NULL unless it is a JSON number.

        ``guarded=False``: only for comparisons already ANDed with a number type test; SQLite
        then skips the second parse (PostgreSQL keeps the guard: a cast of text would fail).
        """
        if not guarded and not self.pg:
            return sa.func.json_extract(expr, self._sqlite_path(path))
        if self.pg:
            node = self._pg_node(expr, path)
            return sa.case(
                (
                    sa.func.jsonb_typeof(node) == "number",
                    sa.cast(self.json_text(expr, path), sa.Numeric),
                ),
                else_=sa.null(),
            )
        raw = sa.func.json_type(expr, self._sqlite_path(path))
        return sa.case(
            (raw.in_(("integer", "real")), sa.func.json_extract(expr, self._sqlite_path(path))),
            else_=sa.null(),
        )

    def elements(self, expr, path: tuple[str, ...], name: str):
        """A FROM item over the elements of the JSON array at ``path`` (nothing if not an array)."""
        if self.pg:
            node = self._pg_node(expr, path)
            safe = sa.case(
                (sa.func.jsonb_typeof(node) == "array", node),
                else_=sa.cast(sa.literal("[]"), postgresql.JSONB),
            )
            table = sa.func.jsonb_array_elements(safe).table_valued("value", name=name)
            return table, PgElement(self, table)
        table = sa.func.json_each(expr, self._sqlite_path(path)).table_valued(
            "value", "type", "atom", name=name
        )
        return table, SqliteElement(self, table)

    # -- strings and dates ----------------------------------------------------------------
    def text(self, expr):
        """A string for comparisons by code point, as Python compares strings."""
        return expr.collate("C") if self.pg else expr

    def contains(self, haystack, needle: str):
        if self.pg:
            return sa.func.strpos(haystack, needle) > 0
        return sa.func.instr(haystack, needle) > 0

    def iso_date_prefix(self, text_expr):
        """True when the string starts with NNNN-NN-NN with month 01-12 and day 01-31."""
        shape = text_expr.op("~")(_ISO_REGEX) if self.pg else text_expr.op("GLOB")(_ISO_GLOB)
        month = self.text(sa.func.substr(text_expr, 6, 2))
        day = self.text(sa.func.substr(text_expr, 9, 2))
        return sa.and_(shape, month.between("01", "12"), day.between("01", "31"))

    def local_date_plus(self, ts, days, offset_minutes: int):
        """local_date(ts) + days, with local time = UTC + offset_minutes; compare it with
        ``date_literal`` (ISO strings on SQLite, dates on PostgreSQL)."""
        if self.pg:
            shifted = sa.func.timezone("UTC", ts) + sa.literal(timedelta(minutes=offset_minutes))
            return sa.cast(shifted, sa.Date) + days
        modifier = sa.literal("+") + sa.cast(days, sa.Text) + sa.literal(" days")
        return sa.func.date(ts, f"{offset_minutes:+d} minutes", modifier)

    def date_literal(self, day: date):
        return sa.literal(day, sa.Date) if self.pg else sa.literal(day.isoformat())

    def may_contain(self, expr, path: tuple[str, ...], values: list[str], in_array: str = ""):
        """A cheap pre-filter, true for every document that holds one of the strings
        ``values`` at ``path`` (inside an element of the array at ``in_array``, when given);
        the exact test still follows it. PostgreSQL: JSONB containment. SQLite: a substring
        test of the stored text, which the app always writes with orjson, so a string appears
        in it exactly as ``orjson.dumps`` spells it."""
        check_path(path)
        if not self.pg:
            return sa.or_(*(sa.func.instr(expr, orjson.dumps(v).decode()) > 0 for v in values))
        shapes = []
        for value in values:
            shape = value
            for key in reversed(path):
                shape = {key: shape}
            if in_array:
                shape = [shape]
                for key in reversed(check_path(tuple(in_array.split(".")))):
                    shape = {key: shape}
            shapes.append(orjson.dumps(shape).decode())
        return sa.or_(
            *(expr.op("@>")(sa.cast(sa.literal(shape), postgresql.JSONB)) for shape in shapes)
        )

    def floor_days(self, number, cap: int):
        """floor(min(number, cap)) as an integer, for a positive number."""
        capped = sa.case((number > cap, cap), else_=number)
        if self.pg:
            return sa.cast(sa.func.floor(capped), sa.Integer)
        return sa.cast(capped, sa.Integer)  # truncation is floor for positive numbers

    def local_day(self, ts, offset_minutes: int):
        """The local calendar date of a timestamp as an ISO string."""
        if self.pg:
            shifted = sa.func.timezone("UTC", ts) + sa.literal(timedelta(minutes=offset_minutes))
            return sa.func.to_char(shifted, "YYYY-MM-DD")
        return sa.func.date(ts, f"{offset_minutes:+d} minutes")


def no_index(column):
    """``+column``: SQLite may not use an index for this term (its documented planner hint).

    Real-time checks of a few profiles must walk each profile's events
    (``ix_events_profile_timestamp``), never every event of a name in a window.
    """
    return UnaryExpression(column, operator=operators.custom_op("+"), type_=column.type)


class SqliteElement:
    """One element of a json_each() row: the element itself or a key inside an object element."""

    def __init__(self, sj: SqlJson, table):
        self.sj, self.table = sj, table

    def json_type(self, path) -> Kind:
        c = self.table.c
        if not path:
            return Kind(c.type, SQLITE_TYPES)
        inner = sa.func.coalesce(sa.func.json_type(c.value, self.sj._sqlite_path(path)), MISSING)
        return Kind(sa.case((c.type == "object", inner), else_=MISSING), SQLITE_TYPES)

    def json_text(self, path):
        c = self.table.c
        if not path:
            return c.atom
        return sa.case((c.type == "object", self.sj.json_text(c.value, path)), else_=sa.null())

    def json_num(self, path, guarded: bool = True):
        c = self.table.c
        if not path:
            return sa.case((c.type.in_(("integer", "real")), c.atom), else_=sa.null())
        return sa.case(
            (c.type == "object", self.sj.json_num(c.value, path, guarded)), else_=sa.null()
        )

    def elements(self, path, name: str):
        # json_each() on a scalar element's text would be malformed JSON: read {} instead.
        c = self.table.c
        source = sa.case((c.type.in_(("object", "array")), c.value), else_="{}")
        return self.sj.elements(source, path, name)


class PgElement:
    """One element of jsonb_array_elements(): a jsonb value like any other."""

    def __init__(self, sj: SqlJson, table):
        self.sj, self.table = sj, table

    def json_type(self, path):
        return self.sj.json_type(self.table.c.value, path)

    def json_text(self, path):
        return self.sj.json_text(self.table.c.value, path)

    def json_num(self, path, guarded: bool = True):
        return self.sj.json_num(self.table.c.value, path, guarded)

    def elements(self, path, name: str):
        return self.sj.elements(self.table.c.value, path, name)


class ColumnRef:
    """A JSON column (profile traits, event properties) seen through the same three methods."""

    def __init__(self, sj: SqlJson, column):
        self.sj, self.column = sj, column

    def json_type(self, path):
        return self.sj.json_type(self.column, path)

    def json_text(self, path):
        return self.sj.json_text(self.column, path)

    def json_num(self, path, guarded: bool = True):
        return self.sj.json_num(self.column, path, guarded)

    def elements(self, path, name: str):
        return self.sj.elements(self.column, path, name)
