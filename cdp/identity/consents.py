"""Consent follows people through merges and unmerges: records move, current state is rebuilt."""

from __future__ import annotations

import sqlalchemy as sa

from cdp.models.consent import ConsentRecord, ConsentState


def move_consent_records(session, ids: list[int] | None, from_id: int, to_id: int) -> list[int]:
    """Re-attribute consent records (all of ``from_id``'s when ``ids`` is None); return their ids."""
    query = sa.select(ConsentRecord.id).where(ConsentRecord.profile_id == from_id)
    if ids is not None:
        query = query.where(ConsentRecord.id.in_(ids))
    moved = list(session.scalars(query))
    if moved:
        session.execute(
            sa.update(ConsentRecord).where(ConsentRecord.id.in_(moved)).values(profile_id=to_id)
        )
    return moved


def rebuild_consent_state(session, profile_ids: list[int]) -> None:
    """Recompute the current consent of profiles from their records (latest record wins)."""
    session.execute(sa.delete(ConsentState).where(ConsentState.profile_id.in_(profile_ids)))
    ranked = (
        sa.select(
            ConsentRecord.id,
            ConsentRecord.profile_id,
            ConsentRecord.purpose,
            ConsentRecord.channel,
            ConsentRecord.status,
            ConsentRecord.recorded_at,
            sa.func.row_number()
            .over(
                partition_by=(
                    ConsentRecord.profile_id,
                    ConsentRecord.purpose,
                    ConsentRecord.channel,
                ),
                order_by=(ConsentRecord.recorded_at.desc(), ConsentRecord.id.desc()),
            )
            .label("rank"),
        )
        .where(ConsentRecord.profile_id.in_(profile_ids))
        .subquery()
    )
    latest = sa.select(
        ranked.c.profile_id,
        ranked.c.purpose,
        ranked.c.channel,
        ranked.c.status,
        ranked.c.recorded_at,
        ranked.c.id,
    ).where(ranked.c.rank == 1)
    session.execute(
        sa.insert(ConsentState).from_select(
            ["profile_id", "purpose", "channel", "status", "updated_at", "record_id"], latest
        )
    )
