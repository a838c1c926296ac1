"""Undoing a merge gives each person back their own unspent points.

When profiles merge, the merged profile's points account is folded into the survivor's on
its next change: its balance moves with two ``adjust`` lines (rule ``merge``) and its lots
(the unspent points of each earn) move to the survivor's account. Undoing the merge moves
back every lot that was earned on an account of the restored profile (or of profiles
merged into it) with what is left of it, and writes two ``adjust`` lines (rule
``unmerge``) per account pair, so each balance still equals its ledger and its lots.
Points the survivor spent in the meantime stay spent: burns took the oldest lots first,
whoever earned them, and a balance can never go below zero because only what is left of
the lots moves.

Coupons need nothing: a coupon keeps the profile it was issued to, and the lookups follow
the merge family, which the undo has already split.
"""

from __future__ import annotations

import sqlalchemy as sa

from cdp.actors import Actor
from cdp.loyalty.accounts import locked_accounts, post
from cdp.loyalty.common import record_change
from cdp.models import Merge, Profile
from cdp.models.loyalty import PointAccount, PointEntry, PointLot
from cdp.profiles import profile_family

RULE = "unmerge"


def split_points(session, merge: Merge, actor: Actor) -> None:
    """Give the restored profile's family back its lots (in the unmerge transaction).

    Runs after the merged profile's ``merged_into_id`` was cleared, so its family no longer
    includes the survivor's.
    """
    session.flush()
    restored = profile_family(merge.merged_id)
    own = set(
        session.scalars(sa.select(PointAccount.id).where(PointAccount.profile_id.in_(restored)))
    )
    if not own:
        return
    # Each moved lot with its holder now and the account whose earn created it.
    moved = session.execute(
        sa.select(PointLot.id, PointLot.account_id, PointEntry.account_id, PointLot.remaining)
        .join(PointEntry, PointEntry.id == PointLot.entry_id)
        .where(PointEntry.account_id.in_(own), PointLot.account_id.not_in(own))
    ).all()
    folded = set(
        session.scalars(
            sa.select(PointAccount.id).where(
                PointAccount.id.in_(own),
                PointAccount.merged_into_id.is_not(None),
                PointAccount.merged_into_id.not_in(own),
            )
        )
    )
    if not moved and not folded:
        return  # the merged account was never folded: it still holds its own points
    holders = {holder for _, holder, _, _ in moved}
    accounts = {a.id: a for a in locked_accounts(session, sorted(own | holders))}
    totals: dict[tuple[int, int], int] = {}
    for _, holder, origin, remaining in moved:
        totals[holder, origin] = totals.get((holder, origin), 0) + remaining
    deltas: dict[int, int] = {}
    for (holder, origin), points in sorted(totals.items()):
        if points:
            key = f"unmerge:{merge.id}:{holder}->{origin}"
            post(session, accounts[holder], "adjust", -points, "system", key, actor, rule=RULE)
            post(
                session, accounts[origin], "adjust", points, "system", key + ":in", actor, rule=RULE
            )
            for account_id, delta in ((holder, -points), (origin, points)):
                profile_id = _live(session, accounts[account_id].profile_id)
                deltas[profile_id] = deltas.get(profile_id, 0) + delta
    for lot_id, _, origin, _ in moved:
        session.execute(sa.update(PointLot).where(PointLot.id == lot_id).values(account_id=origin))
    # Unfolded again: the restored profile's next change folds its family's accounts anew.
    unfold = folded | {origin for _, origin in totals}
    session.execute(
        sa.update(PointAccount).where(PointAccount.id.in_(unfold)).values(merged_into_id=None)
    )
    for profile_id, delta in sorted(deltas.items()):
        balance = session.scalar(
            sa.select(sa.func.coalesce(sa.func.sum(PointAccount.balance), 0)).where(
                PointAccount.profile_id.in_(profile_family(profile_id))
            )
        )
        record_change(
            profile_id, "points", {"balance": int(balance), "delta": delta, "entry": RULE}
        )


def _live(session, profile_id: int) -> int:
    profile = session.get(Profile, profile_id)
    while profile.merged_into_id is not None:
        profile = session.get(Profile, profile.merged_into_id)
    return profile.id
