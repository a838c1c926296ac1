"""Condition types of the rule language, registered by importing their modules."""

from segments.conditions import (  # noqa: F401  (registers the types)
    events,
    hcp,
    journey,
    loyalty,
    medication,
    profile,
    propensity,
    reach,
)
from segments.conditions.base import PLANNED, REGISTRY, Condition, Context, Facts

__all__ = ["PLANNED", "REGISTRY", "Condition", "Context", "Facts"]
