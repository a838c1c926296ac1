"""The JSON Schema part of journey validation: each schema error as (pointer, code, words).

jsonschema's own messages dump whole sub-documents for ``oneOf`` / ``if``-``then`` failures;
these say what is wrong in a sentence a marketer can act on, at the deepest useful path.
"""

from __future__ import annotations

import functools

import jsonschema

from journeys.definition import schema

# JSON Schema keyword -> code; the message says what is wrong in words.
SCHEMA_CODES = {
    "required": "required",
    "additionalProperties": "unknown_key",
    "type": "wrong_type",
    "pattern": "bad_format",
    **dict.fromkeys(("enum", "const", "not"), "not_allowed"),
    **dict.fromkeys(("minimum", "maximum"), "out_of_range"),
    **dict.fromkeys(("minItems", "maxItems", "minLength", "maxLength"), "bad_length"),
    **dict.fromkeys(("oneOf", "anyOf"), "one_of"),
}
BOUNDS = {
    "minimum": "must be at least {}",
    "maximum": "must be at most {}",
    "minItems": "needs at least {} item(s)",
    "maxItems": "takes at most {} item(s)",
    "minLength": "must have at least {} character(s)",
    "maxLength": "takes at most {} characters",
    "const": "must be {!r}",
}
PATTERN_HELP = {
    "step_id": "a step id starts with a letter, then letters, digits, _ or - (40 at most)",
    "time_of_day": "a time of day is HH:MM, 24-hour (e.g. 08:30)",
    "path": "a property path is a key or dotted keys (letters, digits, _)",
}
TYPE_NAMES = {"object": "an object", "array": "a list", "integer": "a whole number"}


def pointer(*parts) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _guard_ifs(node):
    """A copy of the schema where each ``if`` on properties also requires them.

    Otherwise ``if {"properties": {"type": {"const": "wait"}}}`` holds for a step without a
    type, and the rules of every step type would be reported against it.
    """
    if isinstance(node, list):
        return [_guard_ifs(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _guard_ifs(value) for key, value in node.items()}
    condition = node.get("if")
    if isinstance(condition, dict) and "properties" in condition and "required" not in condition:
        node["if"] = {**condition, "required": sorted(condition["properties"])}
    return node


@functools.cache
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(_guard_ifs(schema()))


def _one_of_keys(error) -> str | None:
    """Alternatives that differ only in the keys they require: say which to give."""
    options = error.validator_value
    if not all(set(option) == {"required"} for option in options):
        return None
    present = sum(all(key in error.instance for key in o["required"]) for o in options)
    words = "; ".join(" and ".join(option["required"]) for option in options)
    return f"give {'only ' if present > 1 else ''}one of: {words}"


def _explain(error):
    """(path, code, message) of what is really wrong, looking inside oneOf/anyOf."""
    path = pointer(*error.absolute_path)
    if error.validator not in ("oneOf", "anyOf"):
        yield path, SCHEMA_CODES.get(error.validator, "invalid"), _message(error)
        return
    text = _one_of_keys(error)
    if text or not error.context:
        yield path, "one_of", text or "matches more than one alternative"
        return
    branches: dict[int, list] = {}
    for cause in error.context:
        branches.setdefault(cause.relative_schema_path[0], []).append(cause)
    # A branch whose discriminator (the trigger's "type") does not match is not the one meant.
    meant = [b for b in branches.values() if not any(c.validator == "const" for c in b)]
    if meant:
        for cause in min(meant, key=len):
            yield from _explain(cause)
        return
    consts = [c for b in branches.values() for c in b if c.validator == "const"]
    allowed = ", ".join(dict.fromkeys(str(c.validator_value) for c in consts))
    yield pointer(*consts[0].absolute_path), "not_allowed", f"must be one of: {allowed}"


def _message(error) -> str:
    kind, value, instance = error.validator, error.validator_value, error.instance
    if kind in BOUNDS:
        return BOUNDS[kind].format(value)
    if kind == "required":
        return error.message.replace("is a required property", "is required")
    if kind == "additionalProperties":
        known = error.schema.get("properties", {})
        return "unknown key(s): " + ", ".join(sorted(k for k in instance if k not in known))
    if kind == "type":
        wanted = value if isinstance(value, list) else [value]
        return "must be " + " or ".join(TYPE_NAMES.get(t, f"a {t}") for t in wanted)
    if kind == "enum":
        return "must be one of: " + ", ".join(str(v) for v in value)
    if kind == "pattern":
        defs = schema()["$defs"]
        helps = (text for name, text in PATTERN_HELP.items() if defs[name]["pattern"] == value)
        return f"{instance!r} is not valid: {next(helps, error.schema.get('description', value))}"
    if kind == "not" and set(value) == {"required"}:
        return f"must not have {', '.join(value['required'])} (a holdout path receives nothing)"
    return error.message


def _order(error) -> list[str]:
    return [f"{p:05d}" if isinstance(p, int) else p for p in error.absolute_path]


def schema_errors(definition: dict) -> list[tuple[str, str, str]]:
    """(path, code, message) of every schema error, one per (path, message), in document order."""
    found, seen = [], set()
    for error in sorted(_validator().iter_errors(definition), key=_order):
        for path, code, message in _explain(error):
            if (path, message) not in seen:
                seen.add((path, message))
                found.append((path, code, message))
    return found
