"""Per-source tracking plans: which track events a source may send, and the shape of each.

A plan is a document the customer's analytics team writes: ``{"mode": "allow" | "flag" |
"block", "events": {"<event name>": <JSON Schema of its properties>}}``. In ``flag`` mode
unplanned or non-conforming events are stored and listed as violations; in ``block`` mode
they are rejected (reported in the response and kept as violations); ``allow`` records the
plan without enforcing it. Only ``track`` calls are checked, as in Segment Protocols.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jsonschema
import orjson

from cdp import audit
from cdp.actors import Actor
from cdp.auth.permissions import require
from cdp.db import transaction
from cdp.exceptions import NotFound, ValidationFailed
from cdp.ingest.messages import Candidate
from cdp.models import Source

PLAN_SCHEMA_PATH = Path(__file__).with_name("tracking_plan.schema.json")
MAX_PLAN_BYTES = 256 * 1024


@functools.cache
def _plan_validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads(PLAN_SCHEMA_PATH.read_text()))


@functools.lru_cache(maxsize=512)
def _event_validator(schema_json: bytes) -> jsonschema.Draft202012Validator:
    # Compiled once per distinct schema: a flag/block plan checks every track call.
    return jsonschema.Draft202012Validator(orjson.loads(schema_json))


def validate_plan(plan) -> dict:
    """The plan if it is well-formed; ValidationFailed names the path of the first problem."""
    error = jsonschema.exceptions.best_match(_plan_validator().iter_errors(plan))
    if error is not None:
        path = ".".join(str(p) for p in error.absolute_path) or "plan"
        raise ValidationFailed(f"tracking plan: {path}: {error.message}", path)
    for name, schema in (plan.get("events") or {}).items():
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            where = ".".join(str(p) for p in exc.absolute_path)
            path = f"events.{name}" + (f".{where}" if where else "")
            raise ValidationFailed(
                f"tracking plan: {path}: not a valid JSON Schema: {exc.message}", path
            ) from None
    if len(orjson.dumps(plan)) > MAX_PLAN_BYTES:
        raise ValidationFailed(f"tracking plan is larger than {MAX_PLAN_BYTES // 1024} KB", "plan")
    return plan


def set_tracking_plan(actor: Actor, source_id: str, plan: dict | None) -> Source:
    """Give a source a tracking plan (None removes it); audited. Applies within seconds."""
    require(actor, "sources:edit")
    if plan is not None:
        validate_plan(plan)
    with transaction() as session:
        source = session.get(Source, source_id)
        if source is None:
            raise NotFound("no such source", "source_id")
        source.tracking_plan = plan
        audit.record(
            actor,
            "source.tracking_plan",
            "source",
            source.id,
            mode=plan["mode"] if plan else None,
            events=sorted((plan or {}).get("events") or {}),
        )
    return source


def check(plan: dict | None, candidate: Candidate) -> tuple[str, str] | None:
    """(field, reason) if the event breaks the source's tracking plan, else None."""
    if not plan or candidate.type != "track":
        return None
    schema = (plan.get("events") or {}).get(candidate.name)
    if schema is None:
        return ("event", f"'{candidate.name}' is not in the tracking plan")
    validator = _event_validator(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS))
    error = jsonschema.exceptions.best_match(
        validator.iter_errors(candidate.message.get("properties") or {})
    )
    if error is None:
        return None
    path = ".".join(["properties", *[str(p) for p in error.absolute_path]])
    return (path, error.message)
