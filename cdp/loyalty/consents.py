"""Consent and loyalty: member-sync consent in bulk, and withdrawals told to partners.

``record_member_consents`` writes what ``cdp.consent.record_consent`` writes (a record per
grant or withdrawal, the current state where it is the latest), for up to a thousand
members per call in a handful of statements instead of several per consent, with one
audit row per chunk (the caller's) instead of one per consent.

``watch_consent_withdrawals`` tells every partner holding a card of a profile when that
person withdraws a consent anywhere else (the partner's pull feed), in the same
transaction as the withdrawal itself.
"""

from __future__ import annotations

import sqlalchemy as sa

from cdp.actors import Actor
from cdp.db import utcnow
from cdp.loyalty.common import add_changes
from cdp.loyalty.members import CONSENT_FLAGS
from cdp.models import ConsentRecord, ConsentState, Identity
from cdp.models.loyalty import Partner


def record_member_consents(
    session, changes: list[tuple[int, str, bool]], source_id: str, actor: Actor, sync_id: int
) -> tuple[int, int]:
    """Record (profile id, consent flag, granted) changes; returns (granted, withdrawn)."""
    latest: dict[tuple[int, str, str], str] = {}
    for profile_id, flag, granted in changes:
        purpose, channel = CONSENT_FLAGS[flag]
        latest[(profile_id, purpose, channel)] = "granted" if granted else "withdrawn"
    if not latest:
        return 0, 0
    now = utcnow()
    keys = list(latest)
    records = ConsentRecord.__table__
    record_ids = session.scalars(
        sa.insert(records).returning(records.c.id, sort_by_parameter_order=True),
        [
            {
                "profile_id": pid,
                "purpose": purpose,
                "channel": channel,
                "status": latest[(pid, purpose, channel)],
                "recorded_at": now,
                "source_id": source_id,
                "evidence": {"via": "member_sync", "sync_id": sync_id},
                "actor": actor.audit_id or actor.kind,
            }
            for pid, purpose, channel in keys
        ],
    ).all()
    states = {}
    profile_ids = sorted({k[0] for k in keys})
    for start in range(0, len(profile_ids), 500):
        for state in session.execute(
            sa.select(
                ConsentState.profile_id,
                ConsentState.purpose,
                ConsentState.channel,
                ConsentState.updated_at,
            ).where(ConsentState.profile_id.in_(profile_ids[start : start + 500]))
        ):
            states[(state[0], state[1], state[2])] = state[3]
    inserts, updates = [], []
    for key, record_id in zip(keys, record_ids, strict=True):
        values = {
            "profile_id": key[0],
            "purpose": key[1],
            "channel": key[2],
            "status": latest[key],
            "updated_at": now,
            "record_id": record_id,
        }
        if key not in states:
            inserts.append(values)
        elif now >= states[key]:
            updates.append(values)
    state = ConsentState.__table__
    if inserts:
        session.execute(sa.insert(state), inserts)
    if updates:
        session.execute(
            sa.update(state)
            .where(
                state.c.profile_id == sa.bindparam("k_profile"),
                state.c.purpose == sa.bindparam("k_purpose"),
                state.c.channel == sa.bindparam("k_channel"),
            )
            .values(
                status=sa.bindparam("status"),
                updated_at=sa.bindparam("updated_at"),
                record_id=sa.bindparam("record_id"),
            ),
            [
                {
                    "k_profile": u["profile_id"],
                    "k_purpose": u["purpose"],
                    "k_channel": u["channel"],
                    "status": u["status"],
                    "updated_at": u["updated_at"],
                    "record_id": u["record_id"],
                }
                for u in updates
            ],
        )
    _tell_other_partners(session, latest, source_id)
    statuses = list(latest.values())
    return statuses.count("granted"), statuses.count("withdrawn")


def _tell_other_partners(session, latest: dict, source_id: str) -> None:
    """Withdrawals made through one chain's sync reach the feeds of the person's other chains."""
    withdrawn = [key for key, status in latest.items() if status == "withdrawn"]
    profile_ids = sorted({key[0] for key in withdrawn})
    cards: dict[int, list[tuple]] = {}
    for start in range(0, len(profile_ids), 500):
        for partner_id, card, profile_id in session.execute(
            sa.select(Partner.id, Identity.value_index, Identity.profile_id)
            .join(Partner, Partner.code == Identity.namespace)
            .where(
                Identity.type == "pharmacy_member",
                Identity.profile_id.in_(profile_ids[start : start + 500]),
                Partner.source_id != source_id,
            )
        ):
            cards.setdefault(profile_id, []).append((partner_id, card))
    for profile_id, purpose, channel in withdrawn:
        if profile_id in cards:
            data = {"purpose": purpose, "channel": channel, "status": "withdrawn"}
            add_changes(cards[profile_id], "consent_withdrawn", data)


def _after_consent_insert(_mapper, connection, target: ConsentRecord) -> None:
    if target.status != "withdrawn":
        return
    query = (
        sa.select(Partner.id, Identity.value_index)
        .join(Partner, Partner.code == Identity.namespace)
        .where(Identity.type == "pharmacy_member", Identity.profile_id == target.profile_id)
    )
    if target.source_id:  # a partner's own sync is not echoed back to it
        query = query.where(Partner.source_id != target.source_id)
    rows = [tuple(r) for r in connection.execute(query)]
    data = {"purpose": target.purpose, "channel": target.channel, "status": "withdrawn"}
    add_changes(rows, "consent_withdrawn", data, connection=connection)


_watching = False


def watch_consent_withdrawals() -> None:
    """Hook the ORM so every withdrawal reaches the feeds of the profile's partners (once)."""
    global _watching
    if not _watching:
        sa.event.listen(ConsentRecord, "after_insert", _after_consent_insert)
        _watching = True
