"""Who a person is in the database: their live profile and every profile merged into it."""

from __future__ import annotations

import sqlalchemy as sa

from cdp.db import db
from cdp.models import Profile


def profile_family(profile_id: int) -> list[int]:
    """``profile_id`` and every profile merged into it, directly or through other merges."""
    family = [profile_id]
    frontier = [profile_id]
    while frontier:
        children = list(
            db.session.scalars(
                sa.select(Profile.id).where(
                    Profile.merged_into_id.in_(frontier), Profile.id.not_in(family)
                )
            )
        )
        family += children
        frontier = children
    return family
