"""Comparing a JSON value with an operand: one semantics, written twice (Python and SQL).

Used for profile traits, event properties and the elements of arrays inside them
(``items[].drug_code``). Comparisons are typed: the string "3" never equals the number 3,
``true`` never equals 1, and a missing key or JSON null only satisfies ``not_*`` and
``not_exists``. Strings compare by code point.
"""

from __future__ import annotations

import itertools
import operator

import sqlalchemy as sa

from segments.sqljson import MISSING

SCALAR = {"type": ["string", "number", "boolean"]}
ORDERED = {"type": ["string", "number"]}
OPS = {
    "equals": SCALAR,
    "not_equals": SCALAR,
    "in": {"type": "array", "minItems": 1, "maxItems": 1000, "items": ORDERED},
    "not_in": {"type": "array", "minItems": 1, "maxItems": 1000, "items": ORDERED},
    "exists": None,
    "not_exists": None,
    "contains": {"oneOf": [{"type": "string", "minLength": 1}, {"type": ["number", "boolean"]}]},
    "gt": ORDERED,
    "gte": ORDERED,
    "lt": ORDERED,
    "lte": ORDERED,
    "between": {
        "type": "array",
        "minItems": 2,
        "maxItems": 2,
        "oneOf": [{"items": {"type": "string"}}, {"items": {"type": "number"}}],
    },
}
_ORDER = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}
_NEGATED = {"not_equals": "equals", "not_in": "in", "not_exists": "exists"}


def op_schema(path_property: str | None = "property", required_path: bool = True) -> dict:
    """JSON Schema of ``{<path_property>, op, value}`` with the value's shape per operator."""
    variants = []
    for op, value in OPS.items():
        props = {"op": {"const": op}}
        required = ["op"]
        if value is None:
            props["value"] = {"not": {}, "description": "this operator takes no value"}
        else:
            props["value"] = value
            required.append("value")
        then = {"properties": props, "required": required}
        variants.append({"if": {"properties": {"op": {"const": op}}}, "then": then})
    properties = {path_property: {"$ref": "#/$defs/path"}} if path_property else {}
    properties.update(op={"enum": list(OPS)}, value=True)
    required = [path_property, "op"] if path_property and required_path else ["op"]
    return {"type": "object", "required": required, "properties": properties, "allOf": variants}


def value_problems(op: str, value) -> list[str]:
    """Checks JSON Schema cannot express (a range in the right order)."""
    if op == "between" and isinstance(value, list) and len(value) == 2 and value[0] > value[1]:
        return ["the lower bound of between must not exceed the upper bound"]
    return []


# -- Python ---------------------------------------------------------------------------------


def lookup(obj, path: tuple[str, ...]) -> tuple[bool, object]:
    """(present, value) at ``path`` inside nested objects."""
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return False, None
        obj = obj[key]
    return True, obj


def json_type(present: bool, value) -> str:
    if not present:
        return MISSING
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _equals(kind: str, value, operand) -> bool:
    if isinstance(operand, bool):
        return kind == ("true" if operand else "false")
    if isinstance(operand, int | float):
        return kind == "number" and value == operand
    return kind == "string" and value == operand


def py_match(present: bool, value, op: str, operand) -> bool:
    """Whether the value found (or not) at a path satisfies ``op operand``."""
    if op in _NEGATED:
        return not py_match(present, value, _NEGATED[op], operand)
    kind = json_type(present, value)
    if op == "exists":
        return kind not in (MISSING, "null")
    if op == "equals":
        return _equals(kind, value, operand)
    if op == "in":
        return any(_equals(kind, value, item) for item in operand)
    if op == "contains":
        if kind == "string" and isinstance(operand, str):
            return operand in value
        return kind == "array" and any(
            _equals(json_type(True, item), item, operand) for item in value
        )
    if op == "between":
        low, high = operand
        return _ordered(kind, value, "gte", low) and _ordered(kind, value, "lte", high)
    return _ordered(kind, value, op, operand)


def _ordered(kind: str, value, op: str, operand) -> bool:
    wanted = "number" if isinstance(operand, int | float) else "string"
    return kind == wanted and _ORDER[op](value, operand)


# -- SQL ------------------------------------------------------------------------------------

_names = itertools.count(1)


def fresh_name(prefix: str = "je") -> str:
    """A unique alias for a table-valued function (nested array lookups need distinct names)."""
    return f"{prefix}{next(_names)}"


def _sql_equals(sj, ref, path, operand):
    kind = ref.json_type(path)
    if isinstance(operand, bool):
        return kind.is_("true" if operand else "false")
    if isinstance(operand, int | float):
        return sa.and_(kind.is_("number"), ref.json_num(path, guarded=False) == operand)
    return sa.and_(kind.is_("string"), sj.text(ref.json_text(path)) == operand)


def _sql_in(sj, ref, path, operands):
    kind = ref.json_type(path)
    texts = [o for o in operands if isinstance(o, str)]
    numbers = [o for o in operands if not isinstance(o, str)]
    parts = []
    if texts:
        parts.append(sa.and_(kind.is_("string"), sj.text(ref.json_text(path)).in_(texts)))
    if numbers:
        parts.append(sa.and_(kind.is_("number"), ref.json_num(path, guarded=False).in_(numbers)))
    return sa.or_(*parts)


def _sql_ordered(sj, ref, path, op, operand):
    kind = ref.json_type(path)
    compare = _ORDER[op]
    if isinstance(operand, int | float):
        return sa.and_(kind.is_("number"), compare(ref.json_num(path, guarded=False), operand))
    return sa.and_(kind.is_("string"), compare(sj.text(ref.json_text(path)), operand))


def sql_match(sj, ref, path: tuple[str, ...], op: str, operand):
    """SQL of ``py_match`` for the value at ``path`` of ``ref``: TRUE or FALSE, never NULL."""
    if op in _NEGATED:
        return sa.not_(sql_match(sj, ref, path, _NEGATED[op], operand))
    if op == "exists":
        return sa.not_(ref.json_type(path).is_(MISSING, "null"))
    if op == "equals":
        return _sql_equals(sj, ref, path, operand)
    if op == "in":
        return _sql_in(sj, ref, path, operand)
    if op == "contains":
        kind = ref.json_type(path)
        table, element = ref.elements(path, fresh_name())
        in_array = sa.and_(
            kind.is_("array"),
            sa.exists(
                sa.select(sa.literal(1))
                .select_from(table)
                .where(_sql_equals(sj, element, (), operand))
            ),
        )
        if isinstance(operand, str):
            substring = sa.and_(kind.is_("string"), sj.contains(ref.json_text(path), operand))
            return sa.or_(substring, in_array)
        return in_array
    if op == "between":
        low, high = operand
        return sa.and_(
            _sql_ordered(sj, ref, path, "gte", low), _sql_ordered(sj, ref, path, "lte", high)
        )
    return _sql_ordered(sj, ref, path, op, operand)
