"""Condition types of the rule language, registered by importing their modules."""

from segments.conditions import (  # noqa: F401  (registers the types)
    events,
    medication,
    profile,
    reach,
)
from segments.conditions.base import PLANNED, REGISTRY, Condition, Context, Facts

__all__ = ["PLANNED", "REGISTRY", "Condition", "Context", "Facts"]
