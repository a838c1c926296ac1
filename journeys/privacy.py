"""A person's journeys and deliveries in their PIPL data export (erasure follows foreign keys)."""

from __future__ import annotations

import sqlalchemy as sa

from cdp.db import db
from journeys.models import Delivery, Journey, JourneyInstance, JourneyVersion


def export_section(profile_ids: list[int]) -> list[dict]:
    """Every journey instance of these profiles, then every delivery (what was sent, and why
    not): the rendered message included, since it is what the person received."""
    rows: list[dict] = []
    instances = db.session.execute(
        sa.select(JourneyInstance, Journey.name, JourneyVersion.number)
        .join(Journey, Journey.id == JourneyInstance.journey_id)
        .join(JourneyVersion, JourneyVersion.id == JourneyInstance.version_id)
        .where(JourneyInstance.profile_id.in_(profile_ids))
        .order_by(JourneyInstance.id)
    )
    for instance, name, number in instances:
        rows.append(
            {
                "kind": "journey",
                "journey_id": instance.journey_id,
                "journey": name,
                "version": number,
                "entry_key": instance.entry_key,
                "state": instance.state,
                "step_id": instance.step_id,
                "entered_at": instance.entered_at,
                "ended_at": instance.ended_at,
                "exit_reason": instance.exit_reason,
                "holdout": instance.holdout,
                "converted_at": instance.converted_at,
            }
        )
    for delivery in db.session.scalars(
        sa.select(Delivery).where(Delivery.profile_id.in_(profile_ids)).order_by(Delivery.id)
    ):
        rows.append(
            {
                "kind": "delivery",
                "journey_id": delivery.journey_id,
                "step_id": delivery.step_id,
                "action": delivery.action,
                "channel": delivery.channel,
                "status": delivery.status,
                "reason": delivery.reason,
                "created_at": delivery.created_at,
                "sent_at": delivery.sent_at,
                "delivered_at": delivery.delivered_at,
                "message": (delivery.payload or {}).get("message"),
            }
        )
    return rows
