"""Doctor condition: the running knowledge score in a dimension (a threshold, or "weak").

Scores come from quizzes (cdp.hcp.quizzes); a doctor never assessed in the dimension never
matches, weak or not. "Weak" is a score below HCP_WEAK_BELOW (60 by default).
"""

from __future__ import annotations

import sqlalchemy as sa
from flask import has_app_context

from cdp.hcp.events import QUIZ_SUBMITTED
from cdp.hcp.settings import dimensions, setting
from cdp.models.hcp import KnowledgeScore
from segments.conditions.base import PROFILES, Condition, condition_schema, register, scoped
from segments.conditions.events import compare, sql_compare

KNOWLEDGE = KnowledgeScore.__table__
SCORE = {"type": "number", "minimum": 0, "maximum": 100}
EITHER = {"description": "give either op and value, or weak: true (not both)"}


@register
class Knowledge(Condition):
    """``{"dimension": "product_usage", "op": "lt", "value": 60}`` or ``{"dimension": …,
    "weak": true}``: the doctor's running score (0-100) in that knowledge dimension."""

    type = "knowledge"
    label = "Doctor's knowledge"
    group = "profile"
    schema = condition_schema(
        {
            "dimension": {
                "type": "string",
                "pattern": "^[a-z][a-z0-9_]{0,39}$",
                "description": "a knowledge dimension (HCP_KNOWLEDGE_DIMENSIONS)",
            },
            "op": {"enum": ["gt", "gte", "lt", "lte", "between"]},
            "value": {
                "oneOf": [SCORE, {"type": "array", "items": SCORE, "minItems": 2, "maxItems": 2}]
            },
            "weak": {"const": True, "description": "a score below HCP_WEAK_BELOW"},
        },
        ["dimension"],
        oneOf=[
            {"required": ["op", "value"], "not": {"required": ["weak"]}, **EITHER},
            {
                "required": ["weak"],
                "not": {"anyOf": [{"required": [k]} for k in ("op", "value")]},
                **EITHER,
            },
        ],
        allOf=[
            {
                "if": {"required": ["op"], "properties": {"op": {"const": "between"}}},
                "then": {"properties": {"value": {"type": "array"}}},
                "else": {"properties": {"value": {"type": "number"}}},
            }
        ],
    )
    example = {"type": "knowledge", "dimension": "product_usage", "weak": True}

    def problems(self, _loader):
        value = self.node.get("value")
        if self.node.get("op") == "between" and isinstance(value, list) and value[0] > value[1]:
            return [("value", "the lower bound must not exceed the upper bound")]
        known = dimensions() if has_app_context() else ()
        if known and self.node.get("dimension") not in known:
            return [("dimension", f"unknown dimension; one of {', '.join(known)}")]
        return []

    def depends_on(self):
        # Scores change only when a quiz is scored, which always comes with this event.
        return {f"event:{QUIZ_SUBMITTED}"}

    def _test(self, column):
        if self.node.get("weak"):
            return column < setting("HCP_WEAK_BELOW")
        return sql_compare(column, self.node["op"], self.node["value"])

    def compile(self, ctx):
        k = KNOWLEDGE.c
        query = sa.select(k.profile_id).where(
            k.dimension == self.node["dimension"], self._test(k.score)
        )
        return PROFILES.c.id.in_(scoped(query, k.profile_id, ctx))

    def evaluate(self, facts, ctx):
        score = facts.knowledge.get(self.node["dimension"])
        if score is None:
            return False
        if self.node.get("weak"):
            return score < setting("HCP_WEAK_BELOW")
        return compare(score, self.node["op"], self.node["value"])
