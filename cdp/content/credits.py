"""Mini-program subscribe-message credits: each accepted template allows one later send.

A user's ``accept`` (front-end callback or OA ``subscribe_msg_popup_event``) adds a credit
per template; each send consumes one; a refusal or error 43101 sets them to zero
(../shared/protocols/china-channels.md §3.2). Credits follow the person through merges.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from cdp.db import db, utcnow
from cdp.models.content import SubscribeCredit
from cdp.profiles import profile_family


def add_credits(profile_id: int, template_ids: list[str], count: int = 1) -> None:
    """Add credits in the caller's transaction."""
    dialect = db.session.get_bind().dialect.name
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(SubscribeCredit)
    for template_id in dict.fromkeys(t[:128] for t in template_ids if t):
        statement = insert.values(
            profile_id=profile_id, template_id=template_id, credits=count, updated_at=utcnow()
        ).on_conflict_do_update(
            index_elements=["profile_id", "template_id"],
            set_={"credits": SubscribeCredit.credits + count, "updated_at": utcnow()},
        )
        db.session.execute(statement)


def zero_credits(profile_id: int, template_ids: list[str] | None = None) -> None:
    """Remove credits (all of the person's, or of some templates) in the caller's transaction."""
    query = sa.update(SubscribeCredit).where(
        SubscribeCredit.profile_id.in_(profile_family(profile_id))
    )
    if template_ids is not None:
        query = query.where(SubscribeCredit.template_id.in_(template_ids))
    db.session.execute(query.values(credits=0, updated_at=utcnow()))


def credits_of(profile_id: int, template_id: str) -> int:
    return (
        db.session.scalar(
            sa.select(sa.func.sum(SubscribeCredit.credits)).where(
                SubscribeCredit.profile_id.in_(profile_family(profile_id)),
                SubscribeCredit.template_id == template_id,
            )
        )
        or 0
    )


def consume_credit(profile_id: int, template_id: str) -> bool:
    """Take one credit (atomically, in the caller's transaction); False when there is none."""
    for member in profile_family(profile_id):
        result = db.session.execute(
            sa.update(SubscribeCredit)
            .where(
                SubscribeCredit.profile_id == member,
                SubscribeCredit.template_id == template_id,
                SubscribeCredit.credits > 0,
            )
            .values(credits=SubscribeCredit.credits - 1, updated_at=utcnow())
        )
        if result.rowcount:
            return True
    return False
