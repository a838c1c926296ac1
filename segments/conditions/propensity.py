"""Propensity condition: the stored score of a model's active version, or its top N %.

Profiles without a stored score never match. Scores are an automated decision (PIPL
Art. 24): a profile that refused automated marketing never matches, even with an old
score; scores of a health-data model count only with a current health-data consent.
"""

from __future__ import annotations

import sqlalchemy as sa

from cdp.consent import refused_profiles
from cdp.models import ConsentState
from segments.conditions.base import PROFILES, Condition, condition_schema, register, scoped
from segments.conditions.events import compare, sql_compare
from segments.conditions.reach import consented, has_consent
from segments.propensity.common import NAME, NAME_RULE
from segments.propensity.models import ModelVersion, PropensityModel, PropensityScore

SCORES, VERSIONS, MODELS = (
    PropensityScore.__table__,
    ModelVersion.__table__,
    PropensityModel.__table__,
)
PROBABILITY = {"type": "number", "minimum": 0, "maximum": 1}
EITHER = {"description": "give either op and value, or top_percent (not both)"}


def _refused(ctx):
    """Profiles whose current answer to automated marketing is no (scoped in real time)."""
    if ctx.scope is None and not ctx.scope_table:
        return refused_profiles("automated_marketing")
    query = sa.select(ConsentState.profile_id).where(
        ConsentState.purpose == "automated_marketing",
        ConsentState.channel == "*",
        ConsentState.status == "withdrawn",
    )
    return scoped(query, ConsentState.profile_id, ctx)


@register
class Propensity(Condition):
    """``{"model": name, "op": "gte", "value": 0.7}`` or ``{"model": name, "top_percent": 10}``.

    Top N % is by rank among the profiles the active version scored (rank 1 = highest score,
    ties by profile id): ``rank * 100 <= N * scored``.
    """

    type = "propensity"
    label = "Propensity score"
    group = "profile"
    schema = condition_schema(
        {
            "model": {"type": "string", "pattern": NAME.pattern, "description": NAME_RULE},
            "op": {"enum": ["gt", "gte", "lt", "lte", "between"]},
            "value": {
                "oneOf": [
                    PROBABILITY,
                    {"type": "array", "items": PROBABILITY, "minItems": 2, "maxItems": 2},
                ]
            },
            "top_percent": {"type": "number", "exclusiveMinimum": 0, "maximum": 100},
        },
        ["model"],
        oneOf=[
            {"required": ["op", "value"], "not": {"required": ["top_percent"]}, **EITHER},
            {
                "required": ["top_percent"],
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
    example = {"type": "propensity", "model": "refill_90d", "top_percent": 10}

    def problems(self, _loader):
        value = self.node.get("value")
        if self.node.get("op") == "between" and isinstance(value, list) and value[0] > value[1]:
            return [("value", "the lower bound must not exceed the upper bound")]
        return []

    def depends_on(self):
        # Scores change when the model is scored (which refreshes these segments); consent
        # changes (refusals, health data) are re-checked in real time.
        return {f"model:{self.node['model']}", "consent"}

    def compile(self, ctx):
        s, v, m = SCORES.c, VERSIONS.c, MODELS.c
        if "top_percent" in self.node:
            test = s.rank * 100 <= sa.literal(self.node["top_percent"]) * v.scored_count
        else:
            test = sql_compare(s.score, self.node["op"], self.node["value"])
        query = (
            sa.select(s.profile_id)
            .select_from(
                SCORES.join(VERSIONS, v.id == s.model_version_id).join(MODELS, m.id == v.model_id)
            )
            .where(
                m.name == self.node["model"],
                v.active.is_(True),
                test,
                sa.or_(v.health_data.is_(False), s.profile_id.in_(consented(ctx, "health_data"))),
            )
        )
        return sa.and_(
            PROFILES.c.id.in_(scoped(query, s.profile_id, ctx)),
            PROFILES.c.id.not_in(_refused(ctx)),
        )

    def evaluate(self, facts, ctx):
        found = facts.scores.get(self.node["model"])
        if found is None or facts.consents.get(("automated_marketing", "*")) == "withdrawn":
            return False
        score, rank, scored, health = found
        if health and not has_consent(facts.consents, "health_data", "*"):
            return False
        if "top_percent" in self.node:
            return rank * 100 <= self.node["top_percent"] * scored
        return compare(score, self.node["op"], self.node["value"])
