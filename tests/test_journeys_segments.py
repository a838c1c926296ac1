"""Segments on journey state: entered, still inside, completed, exited, converted."""

from __future__ import annotations

import pytest

from cdp.actors import SYSTEM
from cdp.db import db, utcnow
from cdp.sources import create_source
from journeys.models import JourneyInstance
from segments.compiler import compile_query
from segments.conditions.base import Context
from segments.membership import make_context
from segments.reference import load_facts, reference_members
from tests.journey_helpers import person, publish


@pytest.fixture
def source(app_ctx):
    return create_source(SYSTEM, "POS", "http")[0]


def test_journey_state_conditions_agree_with_the_reference(source):
    journey = publish({"category": "service", "audience": {"kind": "patient"},
                       "trigger": {"type": "event", "event": "x"}, "start": "w",
                       "steps": [{"id": "w", "type": "wait", "duration": "1d"}]})  # fmt: skip
    version_id = journey.id  # one version each, numbered like the journeys in this test
    now = utcnow()
    rows = {
        "waiting": {"state": "waiting", "step_id": "w", "next_run_at": now},
        "done": {"state": "completed", "converted_at": now},
        "left": {"state": "exited", "exit_reason": "exit_event"},
        "control": {"state": "exited", "exit_reason": "global_control", "holdout": True},
        "tester": {"state": "completed", "test": True, "converted_at": now},
    }
    ids = {}
    for name, values in rows.items():
        ids[name] = person(source, name)
        db.session.add(JourneyInstance(journey_id=journey.id, version_id=version_id,
                                       profile_id=ids[name], **values))  # fmt: skip
    db.session.commit()
    expected = {
        "entered": {"waiting", "done", "left"},
        "active": {"waiting"},
        "completed": {"done"},
        "exited": {"left"},
        "converted": {"done"},
    }
    facts = load_facts()
    for state, names in expected.items():
        definition = {"rule": {"type": "journey", "journey_id": journey.id, "state": state}}
        ctx: Context = make_context()
        sql = set(db.session.scalars(compile_query(definition, ctx)))
        assert sql == {ids[n] for n in names}, state
        assert reference_members(definition, ctx, facts) == sql, state
