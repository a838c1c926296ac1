"""The published JSON Schema of segment definitions, and validation that names the path.

``build_schema()`` assembles the schema from each condition type's fragment; the file
``segments/schema/segment.schema.json`` is that schema, written by
``cdp segments schema --write`` (a test fails when the two differ). ``validate()`` checks
a definition node by node, so an error says where it is (a JSON Pointer such as
``/rule/and/1/value``) and what is wrong, rather than "not valid under any schema".
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jsonschema

from cdp.exceptions import ValidationFailed
from segments.compiler import CompileError, analyze
from segments.conditions import PLANNED, REGISTRY
from segments.sqljson import KEY
from segments.values import op_schema

SCHEMA_PATH = Path(__file__).parent / "schema" / "segment.schema.json"
SCHEMA_ID = "https://carepath.cn/schemas/segment.schema.json"
MAX_DEPTH = 8
MAX_CONDITIONS = 100
MAX_CHILDREN = 50
_KEY = KEY.pattern.strip("^$")

SHARED_DEFS = {
    "path": {
        "type": "string",
        "pattern": f"^{_KEY}(\\.{_KEY}){{0,4}}$",
        "description": "a key, or dotted keys into nested objects (letters, digits, _)",
    },
    "window": {
        "type": "object",
        "properties": {
            "last_days": {"type": "integer", "minimum": 1, "maximum": 3650},
            "from": {"type": "string", "format": "date-time"},
            "to": {"type": "string", "format": "date-time", "description": "exclusive"},
        },
        "additionalProperties": False,
        "oneOf": [
            {"required": ["last_days"]},
            {"anyOf": [{"required": ["from"]}, {"required": ["to"]}]},
        ],
    },
    "filter": {
        "oneOf": [
            {**op_schema("property"), "additionalProperties": False},
            {"$ref": "#/$defs/any_filter"},
        ]
    },
    "any_filter": {
        "type": "object",
        "description": "some element of the array at `property` matches every filter in `any`",
        "properties": {
            "property": {"$ref": "#/$defs/path"},
            "any": {
                "type": "array",
                "items": {"$ref": "#/$defs/item_filter"},
                "minItems": 1,
                "maxItems": 10,
            },
        },
        "required": ["property", "any"],
        "additionalProperties": False,
    },
    "item_filter": {
        **op_schema("property", required_path=False),
        "additionalProperties": False,
        "description": "`property` inside an object element; without it, the element itself",
    },
}


def build_schema() -> dict:
    types = sorted(REGISTRY)
    defs = dict(SHARED_DEFS)
    for name in types:
        defs[name] = REGISTRY[name].schema
    defs["node"] = {
        "oneOf": [
            {"$ref": "#/$defs/and"},
            {"$ref": "#/$defs/or"},
            {"$ref": "#/$defs/not"},
            {"$ref": "#/$defs/condition"},
        ]
    }
    for op in ("and", "or"):
        defs[op] = {
            "type": "object",
            "properties": {
                op: {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": MAX_CHILDREN}
            },
            "required": [op],
            "additionalProperties": False,
        }
    defs["not"] = {
        "type": "object",
        "properties": {"not": {"$ref": "#/$defs/node"}},
        "required": ["not"],
        "additionalProperties": False,
    }
    defs["condition"] = {
        "type": "object",
        "required": ["type"],
        "properties": {"type": {"enum": types}},
        "allOf": [
            {"if": {"properties": {"type": {"const": name}}}, "then": {"$ref": f"#/$defs/{name}"}}
            for name in types
        ],
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "CarePath CDP segment definition",
        "description": "See docs/segments.md. Planned condition types (not yet accepted): "
        + ", ".join(sorted(PLANNED)),
        "type": "object",
        "properties": {"version": {"const": 1}, "rule": {"$ref": "#/$defs/node"}},
        "required": ["rule"],
        "additionalProperties": False,
        "$defs": defs,
    }


def schema_text() -> str:
    return json.dumps(build_schema(), indent=2, ensure_ascii=False, sort_keys=True) + "\n"


@functools.cache
def _validator(name: str) -> jsonschema.Draft202012Validator:
    """A validator of one condition type (its fragment, with the shared definitions)."""
    return jsonschema.Draft202012Validator(
        {"$defs": build_schema()["$defs"], "$ref": f"#/$defs/{name}"}
    )


@dataclass(frozen=True)
class Problem:
    path: str  # JSON Pointer into the definition, e.g. /rule/and/0/value
    message: str

    def as_dict(self) -> dict:
        return {"path": self.path, "message": self.message}


class DefinitionInvalid(ValidationFailed):
    """A definition that does not validate; ``problems`` has every (path, message)."""

    def __init__(self, problems: list[Problem]):
        first = problems[0]
        super().__init__(f"{first.path or '/'}: {first.message}", "definition" + first.path)
        self.problems = problems


def _pointer(*parts) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


class _Checker:
    def __init__(self, load_segment: Callable[[int], dict | None]):
        self.load_segment = load_segment
        self.problems: list[Problem] = []
        self.count = 0

    def add(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def node(self, node, path: str, depth: int) -> None:
        if not isinstance(node, dict):
            self.add(path, "must be an object: a condition, or a group with and / or / not")
            return
        if depth > MAX_DEPTH:
            self.add(path, f"groups may be nested at most {MAX_DEPTH} deep")
            return
        groups = [key for key in ("and", "or", "not") if key in node]
        if "type" not in node and len(groups) != 1:
            self.add(path, "needs exactly one of 'and', 'or', 'not' or a condition 'type'")
            return
        if "type" in node:
            self.condition(node, path)
            return
        key = groups[0]
        extra = sorted(set(node) - {key})
        if extra:
            self.add(path, f"unexpected key(s) beside '{key}': {', '.join(extra)}")
        value = node[key]
        if key == "not":
            self.node(value, path + "/not", depth + 1)
            return
        if not isinstance(value, list):
            self.add(f"{path}/{key}", "must be a list of conditions or groups")
            return
        if len(value) > MAX_CHILDREN:
            self.add(f"{path}/{key}", f"at most {MAX_CHILDREN} items per group")
        for index, child in enumerate(value):
            self.node(child, f"{path}/{key}/{index}", depth + 1)

    def condition(self, node: dict, path: str) -> None:
        self.count += 1
        kind = node["type"]
        if kind in PLANNED:
            self.add(path + "/type", f"'{kind}' conditions are planned but not available yet")
            return
        if kind not in REGISTRY:
            known = ", ".join(sorted(REGISTRY))
            self.add(path + "/type", f"unknown condition type {kind!r}; known types: {known}")
            return
        errors = list(_validator(kind).iter_errors(node))
        for error in _leaf_errors(errors):
            self.add(path + _pointer(*error.absolute_path), _message(error))
        if errors:
            return
        for rel, message in REGISTRY[kind](node).problems(self.load_segment):
            self.add(f"{path}/{rel}", message)


def _leaf(error):
    """What is wrong inside a oneOf/anyOf (unless every branch only wanted another type)."""
    while error.validator in ("oneOf", "anyOf") and error.context and not _types(error):
        error = max(error.context, key=lambda e: len(e.absolute_path))
    return error


def _leaf_errors(errors):
    """One error per path, the most specific first."""
    seen = set()
    leaves = sorted((_leaf(e) for e in errors), key=lambda e: -len(e.absolute_path))
    for error in leaves:
        path = tuple(error.absolute_path)
        if path not in seen:
            seen.add(path)
            yield error


def _types(error) -> list[str] | None:
    """The types a oneOf/anyOf accepted, when every branch failed on its type."""
    found = []
    for cause in error.context:
        if cause.validator != "type" or cause.absolute_path != error.absolute_path:
            return None
        wanted = cause.validator_value
        found += wanted if isinstance(wanted, list) else [wanted]
    return list(dict.fromkeys(found)) or None


def _message(error) -> str:
    types = _types(error) if error.validator in ("oneOf", "anyOf") and error.context else None
    if types:
        return f"{error.instance!r} must be of type {' or '.join(types)}"
    if error.validator == "additionalProperties":
        return error.message.replace("Additional properties are not allowed", "unknown key(s)")
    if error.validator == "required":
        return error.message.replace("is a required property", "is required")
    if error.validator == "pattern" and error.schema.get("description"):
        return f"{error.instance!r} is not valid: {error.schema['description']}"
    if error.validator == "not" and error.schema.get("description"):
        return error.schema["description"]
    return error.message


def validate(
    definition, load_segment: Callable[[int], dict | None] = lambda _id: None, own_id=None
) -> list[Problem]:
    """Problems with a definition (empty list: valid). ``own_id`` is the segment being edited."""
    checker = _Checker(load_segment)
    if not isinstance(definition, dict):
        return [Problem("", "a definition must be a JSON object with a 'rule'")]
    extra = sorted(set(definition) - {"version", "rule"})
    if extra:
        checker.add("", f"unknown key(s): {', '.join(extra)}")
    if definition.get("version", 1) != 1:
        checker.add("/version", "only version 1 exists")
    if "rule" not in definition:
        checker.add("", "'rule' is required")
    else:
        checker.node(definition["rule"], "/rule", 1)
    if checker.count > MAX_CONDITIONS:
        checker.add("/rule", f"at most {MAX_CONDITIONS} conditions")
    if checker.problems:
        return checker.problems[:50]
    try:
        analyze(definition, load_segment, own_id)
    except CompileError as exc:
        return [Problem("/rule", str(exc))]
    return []


def check(definition, load_segment=lambda _id: None, own_id=None) -> None:
    """:raise DefinitionInvalid: with every problem found."""
    problems = validate(definition, load_segment, own_id)
    if problems:
        raise DefinitionInvalid(problems)
