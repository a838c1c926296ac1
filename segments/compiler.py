"""A definition's rule tree as one SQL query, as a Python predicate, and what it depends on.

A node is ``{"and": [...]}``, ``{"or": [...]}``, ``{"not": node}`` or a condition
``{"type": ..., ...}`` (see ``segments.conditions``). The query selects the ids of live
(unmerged) profiles; when any condition reads health data (medicine purchases), it is
restricted to profiles with a current ``health_data`` consent, as PIPL requires.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import sqlalchemy as sa

from segments.conditions import REGISTRY, Condition, Context, Facts
from segments.conditions.base import BASE_DEPENDENCIES, PROFILES, scoped
from segments.conditions.reach import CompileError, consented, has_consent

__all__ = ["CompileError", "analyze", "compile_node", "compile_query", "evaluate", "evaluate_node"]


def condition(node: dict) -> Condition:
    return REGISTRY[node["type"]](node)


def compile_node(node: dict, ctx: Context):
    if "and" in node:
        return sa.and_(sa.true(), *(compile_node(child, ctx) for child in node["and"]))
    if "or" in node:
        return sa.or_(sa.false(), *(compile_node(child, ctx) for child in node["or"]))
    if "not" in node:
        return sa.not_(compile_node(node["not"], ctx))
    return condition(node).compile(ctx)


def evaluate_node(node: dict, facts: Facts, ctx: Context) -> bool:
    if "and" in node:
        return all(evaluate_node(child, facts, ctx) for child in node["and"])
    if "or" in node:
        return any(evaluate_node(child, facts, ctx) for child in node["or"])
    if "not" in node:
        return not evaluate_node(node["not"], facts, ctx)
    return condition(node).evaluate(facts, ctx)


def conditions(node: dict) -> Iterator[Condition]:
    """Every condition in a rule tree (not following references to other segments)."""
    if "and" in node or "or" in node:
        for child in node.get("and", node.get("or")):
            yield from conditions(child)
    elif "not" in node:
        yield from conditions(node["not"])
    else:
        yield condition(node)


@dataclass
class Analysis:
    depends_on: set[str] = field(default_factory=lambda: set(BASE_DEPENDENCIES))
    health_data: bool = False
    time_based: bool = False
    references: set[int] = field(default_factory=set)  # direct and indirect


def analyze(
    definition: dict, load_segment: Callable[[int], dict | None], own_id: int | None = None
) -> Analysis:
    """Dependencies, health-data use, time dependence and references (through other segments).

    :raise CompileError: a referenced segment is missing, or the references form a cycle.
    """
    result = Analysis()

    def visit(rule: dict, stack: tuple[int, ...]) -> None:
        for cond in conditions(rule):
            result.depends_on |= cond.depends_on()
            result.health_data |= cond.uses_health_data()
            result.time_based |= bool(cond.time_based)
            for ref in cond.references():
                if ref in stack:
                    path = " → ".join(str(s) for s in (*stack, ref))
                    raise CompileError(f"segment references form a cycle: {path}")
                referenced = load_segment(ref)
                if referenced is None:
                    raise CompileError(f"segment {ref} does not exist")
                result.references.add(ref)
                visit(referenced["rule"], (*stack, ref))

    visit(definition["rule"], (own_id,) if own_id is not None else ())
    if result.health_data:
        result.depends_on.add("consent")
    return result


def compile_query(definition: dict, ctx: Context, analysis: Analysis | None = None) -> sa.Select:
    """SELECT profiles.id of the live profiles matching the definition."""
    analysis = analysis or analyze(definition, ctx.load_segment)
    query = sa.select(PROFILES.c.id).where(
        PROFILES.c.merged_into_id.is_(None), compile_node(definition["rule"], ctx)
    )
    if analysis.health_data:
        query = query.where(PROFILES.c.id.in_(consented(ctx, "health_data")))
    return scoped(query, PROFILES.c.id, ctx)


def evaluate(definition: dict, facts: Facts, ctx: Context, analysis: Analysis | None = None):
    """The reference answer for one profile: what ``compile_query`` must agree with."""
    analysis = analysis or analyze(definition, ctx.load_segment)
    if analysis.health_data and not has_consent(facts.consents, "health_data", "*"):
        return False
    return evaluate_node(definition["rule"], facts, ctx)
