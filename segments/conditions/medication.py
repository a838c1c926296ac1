"""Medication conditions: refill lapse (no repeat purchase after the predicted run-out date).

Always health data (PIPL): a segment using it only counts profiles with health-data consent.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import sqlalchemy as sa

from cdp.models.purchases import PURCHASE_EVENTS, SUPPLY_CAP
from segments.conditions.base import PROFILES, Context, condition_schema, register, scoped
from segments.conditions.events import COMMON, EVENTS, EventCondition
from segments.conditions.lines import lapsed_profiles
from segments.conditions.planner import event_columns
from segments.values import fresh_name, json_type


@register
class RefillLapse(EventCondition):
    """Bought a medicine, and its predicted run-out date plus ``grace_days`` has passed.

    Run-out = local date of a purchase + the line's ``items[].days_of_supply``. A profile
    lapses when it bought one of ``drug_codes`` within ``lookback_days`` and no such purchase
    covers today: ``purchase date + supply + grace_days > today`` holds for none of them.
    """

    type = "refill_lapse"
    label = "Refill lapse (no repeat purchase after run-out)"
    time_based = True
    window = False
    schema = condition_schema(
        {
            "event": {**COMMON["event"], "default": ["pos_purchase", "order_completed"]},
            "drug_codes": {
                "type": "array",
                "items": {"type": "string", "minLength": 1, "maxLength": 64},
                "minItems": 1,
                "maxItems": 200,
            },
            "grace_days": {"type": "integer", "minimum": 0, "maximum": 365},
            "lookback_days": {"type": "integer", "minimum": 1, "maximum": 3650, "default": 365},
        },
        ["grace_days"],
    )
    example = {"type": "refill_lapse", "drug_codes": ["D001", "D008"], "grace_days": 40}

    def names(self):
        event = self.node.get("event", ["pos_purchase", "order_completed"])
        return [event] if isinstance(event, str) else list(dict.fromkeys(event))

    def uses_health_data(self):
        return True

    def reads_properties(self):
        return True

    def _lookback(self, ctx: Context) -> datetime:
        return ctx.days_ago(self.node.get("lookback_days", 365))

    def compile(self, ctx):
        """One pass over the purchase lines: per profile, the latest run-out date; lapsed when
        even that one plus the grace days is not after today."""
        last_day = ctx.today - timedelta(days=self.node["grace_days"])
        names, codes = self.names(), self.node.get("drug_codes")
        if set(names) <= set(PURCHASE_EVENTS):  # the projection, not the events' JSON
            lapsed = lapsed_profiles(ctx, names, codes, self._lookback(ctx), last_day)
            return PROFILES.c.id.in_(lapsed)
        e = EVENTS
        name, ts = event_columns(ctx, self, self._lookback(ctx))
        table, item = ctx.sql.elements(e.c.properties, ("items",), fresh_name())
        supply = item.json_num(("days_of_supply",))
        tests = [
            e.c.profile_id.is_not(None),
            name.in_(self.names()),
            ts <= ctx.now,
            ts >= self._lookback(ctx),
            item.json_type(("days_of_supply",)).is_("number"),
            supply > 0,
        ]
        if "drug_codes" in self.node:
            codes = self.node["drug_codes"]
            tests.append(ctx.sql.may_contain(e.c.properties, ("drug_code",), codes, "items"))
            code = ctx.sql.text(item.json_text(("drug_code",)))
            tests += [
                item.json_type(("drug_code",)).is_("string"),
                code.in_(self.node["drug_codes"]),
            ]
        runs_out = ctx.sql.local_date_plus(
            e.c.timestamp, ctx.sql.floor_days(supply, SUPPLY_CAP), ctx.offset_minutes
        )
        lapsed = (
            sa.select(e.c.profile_id)
            .select_from(e.join(table, sa.true()))
            .where(*tests)
            .group_by(e.c.profile_id)
            .having(sa.func.max(runs_out) <= ctx.sql.date_literal(last_day))
        )
        return PROFILES.c.id.in_(scoped(lapsed, e.c.profile_id, ctx))

    def evaluate(self, facts, ctx):
        names, codes = set(self.names()), self.node.get("drug_codes")
        lookback, grace = self._lookback(ctx), self.node["grace_days"]
        bought = covered = False
        for name, ts, props in facts.events:
            if name not in names or ts > ctx.now or ts < lookback:
                continue
            items = props.get("items") if isinstance(props, dict) else None
            for item in items if isinstance(items, list) else ():
                if not isinstance(item, dict):
                    continue
                supply = item.get("days_of_supply")
                if json_type("days_of_supply" in item, supply) != "number" or supply <= 0:
                    continue
                code = item.get("drug_code")
                if codes is not None and (not isinstance(code, str) or code not in codes):
                    continue
                bought = True
                days = math.floor(min(supply, SUPPLY_CAP)) + grace
                if ctx.local_date(ts) + timedelta(days=days) > ctx.today:
                    covered = True
        return bought and not covered
