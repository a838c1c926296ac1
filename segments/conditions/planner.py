"""Where event conditions read the event log from: planner hints for SQLite."""

from __future__ import annotations

from datetime import datetime

from cdp.models import Event
from segments.conditions.base import Context
from segments.sqljson import no_index

EVENTS = Event.__table__

SCAN_SHARE = 0.1


def event_columns(ctx: Context, condition, start: datetime | None):
    """(name, timestamp) columns to filter on, steering SQLite's planner (PostgreSQL's has
    the statistics to choose by itself). ``condition`` is an event condition (its
    ``names()`` and ``reads_properties()``):

    - a real-time check of a few profiles walks each one's events (profile index), never every
      event of a name in a window;
    - a rule that reads event properties, over events that are a large share of the table
      (purchases), scans the table in order: several times faster than fetching that many rows
      one by one through the (name, timestamp) index.
    """
    hidden = (no_index(EVENTS.c.name), no_index(EVENTS.c.timestamp))
    if ctx.dialect != "sqlite":
        return EVENTS.c.name, EVENTS.c.timestamp
    if ctx.scope is not None or ctx.scope_table:
        return hidden
    if condition.reads_properties() and ctx.estimate is not None:
        if ctx.estimate(tuple(condition.names()), start) > SCAN_SHARE:
            return hidden
    return EVENTS.c.name, EVENTS.c.timestamp
