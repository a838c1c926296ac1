"""The ``invite_to_meeting`` step: a journey invites a doctor to a meeting, once per delivery.

The runner writes the step's delivery row like any effect step; performing it records the
invitation (cdp.hcp.meetings.invite_from_journey: idempotent per meeting and doctor, so a
retried delivery invites once). A meeting cancelled or over, or a profile that is not a
doctor, skips the delivery with the reason.
"""

from __future__ import annotations

from datetime import datetime

from cdp.hcp.meetings import invite_from_journey
from journeys.engine.delivery import register_action, run_internal
from journeys.models import Delivery


def perform_invitation(delivery: Delivery, now: datetime) -> str:
    step = delivery.payload["step"]

    def effect():
        row = invite_from_journey(delivery.profile_id, step["meeting_id"], delivery.key)
        return str(row.id), {"meeting_id": row.meeting_id, "invitation": row.invitation}

    return run_internal(delivery, effect)


register_action("invite_to_meeting", perform_invitation)
