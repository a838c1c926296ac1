"""Journey state: has the person entered a journey, is still in it, completed, left, converted.

Journeys sit above segments (they trigger on segment entry), so this condition reads the
``journey_instances`` table by name instead of importing the journeys package. Test-mode
instances and the global control group (recorded, never contacted) never count.
"""

from __future__ import annotations

import sqlalchemy as sa

from segments.conditions.base import PROFILES, Condition, condition_schema, register, scoped

INSTANCES = sa.table(
    "journey_instances",
    sa.column("profile_id", sa.BigInteger),
    sa.column("journey_id", sa.Integer),
    sa.column("state", sa.String),
    sa.column("exit_reason", sa.String),
    sa.column("converted_at", sa.DateTime),
    sa.column("test", sa.Boolean),
)
STATES = ("entered", "active", "completed", "exited", "converted")
LIVE = ("active", "waiting")


def matches(state: str, instance_state: str, converted: bool) -> bool:
    """The Python statement of each state (the reference the SQL must agree with)."""
    if state == "entered":
        return True
    if state == "active":
        return instance_state in LIVE
    if state == "converted":
        return converted
    return instance_state == state


@register
class JourneyState(Condition):
    """``{"journey_id": 3, "state": "completed"}``: some instance of the journey is so."""

    type = "journey"
    label = "Journey state"
    group = "reach"
    # Instances move without events of their own: the scheduled refresh keeps this current.
    time_based = True
    schema = condition_schema(
        {"journey_id": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
         "state": {"enum": list(STATES)}},
        ["journey_id", "state"],
    )  # fmt: skip
    example = {"type": "journey", "journey_id": 1, "state": "converted"}

    def depends_on(self):
        return {f"journey:{self.node['journey_id']}"}

    def compile(self, ctx):
        i, state = INSTANCES.c, self.node["state"]
        tests = [
            i.journey_id == self.node["journey_id"],
            i.test.is_(False),
            sa.or_(i.exit_reason.is_(None), i.exit_reason != "global_control"),
        ]
        if state == "active":
            tests.append(i.state.in_(LIVE))
        elif state == "converted":
            tests.append(i.converted_at.is_not(None))
        elif state != "entered":
            tests.append(i.state == state)
        query = sa.select(i.profile_id).where(*tests)
        return PROFILES.c.id.in_(scoped(query, i.profile_id, ctx))

    def evaluate(self, facts, ctx):
        return any(
            journey_id == self.node["journey_id"] and matches(self.node["state"], state, converted)
            for journey_id, state, converted in facts.journeys
        )
