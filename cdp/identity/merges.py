"""Merge history and undo: put a merged profile back exactly as it was."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import sqlalchemy as sa

from cdp import audit
from cdp.actors import Actor
from cdp.auth.permissions import require
from cdp.db import db, transaction, utcnow
from cdp.exceptions import Conflict, NotFound
from cdp.identity.consents import move_consent_records, rebuild_consent_state
from cdp.models import Event, Identity, Merge, Profile
from cdp.models.purchases import move_lines
from cdp.profiles import decrypt_profile_pii, name_index

_CHUNK = 500
# Areas that keep their own per-profile state put it back too (loyalty: points lots).
UNMERGE_HOOKS: dict[str, Callable] = {}


def register_unmerge_hook(name: str, fn: Callable) -> None:
    """``fn(session, merge, actor)`` runs in the unmerge transaction, after the split."""
    UNMERGE_HOOKS[name] = fn


def merge_history(profile_id: int) -> list[Merge]:
    """Merges into or out of a profile, newest first."""
    return list(
        db.session.scalars(
            sa.select(Merge)
            .where(sa.or_(Merge.survivor_id == profile_id, Merge.merged_id == profile_id))
            .order_by(Merge.id.desc())
        )
    )


def list_merges(before_id: int | None = None, limit: int = 50) -> list[Merge]:
    query = sa.select(Merge).order_by(Merge.id.desc()).limit(limit)
    if before_id:
        query = query.where(Merge.id < before_id)
    return list(db.session.scalars(query))


def _pick_merge(profile_id: int, merge_id: int | None) -> Merge:
    if merge_id is not None:
        merge = db.session.get(Merge, merge_id)
        if merge is None or profile_id not in (merge.survivor_id, merge.merged_id):
            raise NotFound("no such merge for this profile", "merge_id")
        return merge
    merge = db.session.scalar(
        sa.select(Merge)
        .where(
            sa.or_(Merge.merged_id == profile_id, Merge.survivor_id == profile_id),
            Merge.undone_at.is_(None),
        )
        .order_by(Merge.id.desc())
        .limit(1)
    )
    if merge is None:
        raise NotFound("this profile has no merge to undo", "profile_id")
    return merge


def _move_back(model, ids: list[int], survivor: int, merged: int) -> None:
    for start in range(0, len(ids), _CHUNK):
        db.session.execute(
            sa.update(model)
            .where(model.id.in_(ids[start : start + _CHUNK]), model.profile_id == survivor)
            .values(profile_id=merged)
        )


def unmerge(actor: Actor, profile_id: int, merge_id: int | None = None) -> Merge:
    """Undo a merge: the merged profile gets back its identifiers, events and life.

    The survivor's traits go back to their state before the merge when no later
    merge built on them; events and identifiers that arrived after the merge stay.
    """
    require(actor, "profiles:unmerge")
    with transaction() as session:
        merge = _pick_merge(profile_id, merge_id)
        if merge.undone_at is not None:
            raise Conflict("this merge was already undone", "merge_id")
        survivor = session.get(Profile, merge.survivor_id)
        merged = session.get(Profile, merge.merged_id)
        if merged.merged_into_id != survivor.id:
            raise Conflict("the merged profile changed since; undo later merges first", "merge_id")
        _move_back(Identity, merge.moved_identity_ids, survivor.id, merged.id)
        _move_back(Event, merge.moved_event_ids, survivor.id, merged.id)
        for start in range(0, len(merge.moved_event_ids), _CHUNK):
            ids = merge.moved_event_ids[start : start + _CHUNK]
            move_lines(session, survivor.id, merged.id, ids)
        if merge.moved_consent_ids:
            move_consent_records(session, merge.moved_consent_ids, survivor.id, merged.id)
            rebuild_consent_state(session, [survivor.id, merged.id])
        later = session.scalar(
            sa.select(Merge.id).where(
                Merge.survivor_id == survivor.id, Merge.id > merge.id, Merge.undone_at.is_(None)
            )
        )
        if later is None:
            before = merge.survivor_before
            survivor.traits = before.get("traits", {})
            survivor.trait_times = before.get("trait_times", {})
            survivor.pii_encrypted = merge.survivor_pii_before
            survivor.first_seen_at = _parse(before.get("first_seen_at"))
            survivor.last_seen_at = _parse(before.get("last_seen_at"))
            survivor.name_index = _name_index_of(survivor)
        merged.merged_into_id = None
        for hook in UNMERGE_HOOKS.values():
            hook(session, merge, actor)
        survivor.updated_at = merged.updated_at = utcnow()
        merge.undone_at = utcnow()
        merge.undone_by_id = actor.user_id
        audit.record(
            actor, "profile.unmerge", "profile", survivor.id, merge_id=merge.id, restored=merged.id
        )
    return merge


def _parse(value):
    return datetime.fromisoformat(value) if value else None


def _name_index_of(profile: Profile):
    return name_index(decrypt_profile_pii(profile.pii_encrypted)) if profile.pii_encrypted else None
