"""What a partner reads about its own members: lookup by card or phone, and the changes feed.

Every function takes the ``PartnerActor`` and filters by its ``partner_id``; a card, phone,
or id of another partner's member is "not found".
"""

from __future__ import annotations

import sqlalchemy as sa

from cdp.auth.permissions import require
from cdp.db import db
from cdp.exceptions import NotFound, ValidationFailed
from cdp.identity.types import make_identifier
from cdp.loyalty.common import is_member, is_postgres
from cdp.loyalty.partners import PartnerActor, get_partner
from cdp.models import Identity
from cdp.models.loyalty import Member, MemberChange
from cdp.pii import vault
from cdp.profiles import live_profile_id


def find_member(
    actor: PartnerActor, card_no: str | None = None, phone: str | None = None
) -> tuple[int, str]:
    """(live profile id, card no) of this partner's member with that card or phone."""
    require(actor, "partner:api")
    partner = get_partner(actor.partner_id)
    if bool(card_no) == bool(phone):
        raise ValidationFailed("give either member (the card number) or phone", "member")
    if card_no:
        profile_id = db.session.scalar(
            sa.select(Identity.profile_id).where(
                Identity.type == "pharmacy_member",
                Identity.namespace == partner.code,
                Identity.value_index == str(card_no).strip(),
            )
        )
    else:
        try:
            ident = make_identifier(vault(), "phone", phone)
        except ValidationFailed as exc:
            raise ValidationFailed(f"phone: {exc.message}", "phone") from None
        profile_id = db.session.scalar(
            sa.select(Identity.profile_id).where(
                Identity.type == "phone", Identity.value_index == ident.index
            )
        )
    live = live_profile_id(profile_id) if profile_id is not None else None
    if live is None or not is_member(live, partner.id):
        raise NotFound("no such member", "member")
    card = db.session.scalar(
        sa.select(Identity.value_index).where(
            Identity.type == "pharmacy_member",
            Identity.namespace == partner.code,
            Identity.profile_id == live,
        )
    )
    return live, card


def member_record(actor: PartnerActor, card_no: str) -> Member:
    require(actor, "partner:api")
    member = db.session.scalar(
        sa.select(Member).where(Member.partner_id == actor.partner_id, Member.card_no == card_no)
    )
    if member is None:
        raise NotFound("no such member", "card_no")
    return member


def _horizon() -> int | None:
    """Transactions below this id have all ended (PostgreSQL); None on SQLite."""
    if not is_postgres():
        return None
    return db.session.scalar(
        sa.text("SELECT (pg_snapshot_xmin(pg_current_snapshot())::text)::bigint")
    )


def member_changes(
    actor: PartnerActor, since: tuple[int, int] | None = None, limit: int = 100
) -> tuple[list[MemberChange], tuple[int, int] | None, bool]:
    """A page of changes after ``since``: (changes, cursor to pass next, more waiting)."""
    require(actor, "partner:api")
    db.session.rollback()  # a fresh snapshot: the horizon must be current
    horizon = _horizon()
    query = sa.select(MemberChange).where(MemberChange.partner_id == actor.partner_id)
    if since is not None:
        query = query.where(sa.tuple_(MemberChange.tx_seq, MemberChange.id) > sa.tuple_(*since))
    if horizon is not None:
        query = query.where(MemberChange.tx_seq < horizon)
    rows = list(
        db.session.scalars(query.order_by(MemberChange.tx_seq, MemberChange.id).limit(limit + 1))
    )
    more = len(rows) > limit
    rows = rows[:limit]
    cursor = (rows[-1].tx_seq, rows[-1].id) if rows else since
    return rows, cursor, more
