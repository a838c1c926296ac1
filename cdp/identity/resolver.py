"""Resolve the identifiers of a batch of events to profiles, merging and refusing per the rules.

Runs inside the caller's transaction. For each event, identifiers are taken in
priority order: the first one already known anchors the event to its profile;
each other known identifier pulls its profile into a merge unless that would
join different kinds or break a per-type limit, in which case that (lower
priority) identifier is dropped from the link and a conflict is recorded. New
identifiers are attached unless they would break a limit. Profiles first seen
in the batch get temporary negative ids and are inserted in one statement at
the end, so first-sight links inside a batch cost no merge.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa

from cdp import audit
from cdp.actors import Actor
from cdp.db import utcnow
from cdp.identity.consents import move_consent_records, rebuild_consent_state
from cdp.identity.traits import apply_by_time, merge_by_time
from cdp.identity.types import Identifier
from cdp.models import Event, Identity, IdentityConflict, Merge, Profile
from cdp.pii import PiiVault
from cdp.profiles import PROFILE_PII_AAD, name_index

PII_PREFIX = "pii."
_CHUNK = 500


@dataclass
class NewProfile:
    kind: str
    traits: dict = field(default_factory=dict)
    trait_times: dict = field(default_factory=dict)
    pii: dict = field(default_factory=dict)
    first_seen_at: datetime | None = None
    last_seen_at: datetime | None = None


class Resolver:
    def __init__(self, session, vault: PiiVault, source_id: str, actor: Actor):
        self.session = session
        self.vault = vault
        self.source_id = source_id
        self.actor = actor
        self.owner: dict[tuple, int] = {}
        self.kinds: dict[int, str] = {}
        self.slots: dict[int, dict[tuple, set]] = defaultdict(lambda: defaultdict(set))
        self.redirect: dict[int, int] = {}
        self.existing: dict[int, Profile] = {}
        self.new: dict[int, NewProfile] = {}
        self.pii: dict[int, dict] = {}  # decrypted PII of profiles whose PII changed
        self.new_identities: list[tuple[int, Identifier]] = []
        self.touched: set[int] = set()
        self.merges = 0
        self.conflicts = 0

    # -- loading -----------------------------------------------------------------------
    def preload(self, identifiers: list[Identifier]) -> None:
        """Find the owners of every identifier of the batch, and those profiles' identifiers."""
        keys = list({i.key for i in identifiers})
        cols = (Identity.type, Identity.namespace, Identity.value_index)
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            rows = self.session.execute(
                sa.select(*cols, Identity.profile_id).where(sa.tuple_(*cols).in_(chunk))
            )
            for type_, namespace, index, profile_id in rows:
                self.owner[(type_, namespace, index)] = profile_id
        self._load_profiles(set(self.owner.values()))

    def _load_profiles(self, ids: set[int]) -> None:
        ids = [i for i in ids if i > 0 and i not in self.existing]
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            for profile in self.session.scalars(sa.select(Profile).where(Profile.id.in_(chunk))):
                self.existing[profile.id] = profile
                self.kinds[profile.id] = profile.kind
            rows = self.session.execute(
                sa.select(
                    Identity.profile_id, Identity.type, Identity.namespace, Identity.value_index
                ).where(Identity.profile_id.in_(chunk))
            )
            for profile_id, type_, namespace, index in rows:
                self.slots[profile_id][(type_, namespace)].add(index)

    # -- resolution ----------------------------------------------------------------------
    def find(self, profile_id: int | None) -> int | None:
        while profile_id in self.redirect:
            profile_id = self.redirect[profile_id]
        return profile_id

    def owner_of(self, identifier: Identifier) -> int | None:
        return self.find(self.owner.get(identifier.key))

    def _combined(self, group: set[int]) -> dict[tuple, set]:
        combined: dict[tuple, set] = defaultdict(set)
        for member in group:
            for slot, values in self.slots[member].items():
                combined[slot] |= values
        return combined

    def _refusal(self, group: set[int], other: int, kind: str) -> str | None:
        if self.kinds[other] != kind:
            return "profiles of different kinds never merge"
        combined = self._combined(group | {other})
        for slot, values in combined.items():
            limit = Identifier(slot[0], slot[1], "", "").spec.max_per_profile
            if limit is not None and len(values) > limit:
                label = f"{slot[0]}:{slot[1]}" if slot[1] else slot[0]
                return f"merge would give a profile {len(values)} {label} (limit {limit})"
        return None

    def resolve(
        self,
        identifiers: list[Identifier],
        kind: str,
        message_id: str,
        link_only: frozenset = frozenset(),
    ) -> int | None:
        """Return the profile id (possibly temporary) the event belongs to, or None."""
        ranked = sorted({i.key: i for i in identifiers}.values(), key=lambda i: -i.spec.priority)
        group: set[int] = set()
        linked_by: list[str] = []
        fresh: list[Identifier] = []
        for ident in ranked:
            owner = self.owner_of(ident)
            if owner is None:
                if ident.key not in link_only:
                    fresh.append(ident)
            elif not group:
                group.add(owner)
                kind = self.kinds[owner]
            elif owner not in group:
                reason = self._refusal(group, owner, kind)
                if reason:
                    self._conflict(min(group), owner, ident.label, reason, message_id)
                    continue
                group.add(owner)
                linked_by.append(ident.label)
        if not group:
            if not fresh:
                return None
            if any(i.spec.hcp_only for i in fresh):
                kind = "hcp"
            temp = -(len(self.new) + 1)
            self.new[temp] = NewProfile(kind=kind)
            self.kinds[temp] = kind
            group.add(temp)
        survivor = self._survivor(group)
        for other in sorted(group - {survivor}, key=lambda p: (p < 0, abs(p))):
            self._merge(survivor, other, linked_by, message_id)
        self._attach(survivor, fresh, kind, message_id)
        self.touched.add(survivor)
        return survivor

    @staticmethod
    def _survivor(group: set[int]) -> int:
        stored = [p for p in group if p > 0]
        return min(stored) if stored else max(group)  # the oldest profile survives

    def _attach(self, profile_id: int, fresh: list[Identifier], kind: str, message_id: str):
        slots = self.slots[profile_id]
        for ident in fresh:
            if ident.spec.hcp_only and kind != "hcp":
                self._conflict(profile_id, None, ident.label, "only doctors have this", message_id)
                continue
            limit = ident.spec.max_per_profile
            if limit is not None and len(slots[ident.slot] | {ident.index}) > limit:
                reason = f"profile already has {limit} {ident.label}"
                self._conflict(profile_id, None, ident.label, reason, message_id)
                continue
            slots[ident.slot].add(ident.index)
            self.owner[ident.key] = profile_id
            self.new_identities.append((profile_id, ident))

    def _conflict(self, profile_id, other_id, label, reason, message_id) -> None:
        self.conflicts += 1
        if profile_id < 0 or (other_id is not None and other_id < 0):
            return  # a profile first seen in this batch: nothing stored to review yet
        self.session.add(
            IdentityConflict(
                profile_id=profile_id,
                other_profile_id=other_id,
                identifier_type=label,
                reason=reason,
                source_id=self.source_id,
                message_id=message_id,
            )
        )

    # -- merging -------------------------------------------------------------------------
    def _merge(self, survivor: int, loser: int, linked_by: list[str], message_id: str) -> None:
        for slot, values in self.slots.pop(loser, {}).items():
            self.slots[survivor][slot] |= values
        self.redirect[loser] = survivor
        self.touched.discard(loser)
        if loser < 0:
            self._fold_new(survivor, self.new.pop(loser))
            return
        self.merges += 1
        kept, gone = self.existing[survivor], self.existing[loser]
        moved_identities = list(
            self.session.scalars(sa.select(Identity.id).where(Identity.profile_id == loser))
        )
        moved_events = list(
            self.session.scalars(sa.select(Event.id).where(Event.profile_id == loser))
        )
        self.session.execute(
            sa.update(Identity).where(Identity.profile_id == loser).values(profile_id=survivor)
        )
        self.session.execute(
            sa.update(Event).where(Event.profile_id == loser).values(profile_id=survivor)
        )
        moved_consents = move_consent_records(self.session, None, loser, survivor)
        if moved_consents:
            rebuild_consent_state(self.session, [survivor, loser])
        before = {
            "traits": dict(kept.traits),
            "trait_times": dict(kept.trait_times or {}),
            "first_seen_at": _iso(kept.first_seen_at),
            "last_seen_at": _iso(kept.last_seen_at),
        }
        self.session.add(
            Merge(
                survivor_id=survivor,
                merged_id=loser,
                source_id=self.source_id,
                message_id=message_id,
                linked_by=linked_by,
                moved_identity_ids=moved_identities,
                moved_event_ids=moved_events,
                moved_consent_ids=moved_consents,
                survivor_before=before,
                survivor_pii_before=kept.pii_encrypted,
            )
        )
        traits, times = dict(kept.traits), dict(kept.trait_times or {})
        merge_by_time(traits, times, gone.traits, gone.trait_times or {})
        pii = self.profile_pii(survivor)
        merge_by_time(pii, times, self.profile_pii(loser), gone.trait_times or {}, PII_PREFIX)
        kept.traits, kept.trait_times = traits, times
        kept.first_seen_at = _earliest(kept.first_seen_at, gone.first_seen_at)
        kept.last_seen_at = _latest(kept.last_seen_at, gone.last_seen_at)
        gone.merged_into_id = survivor
        gone.updated_at = utcnow()
        audit.record(
            self.actor, "profile.merge", "profile", survivor, merged=loser, linked_by=linked_by
        )

    def _fold_new(self, survivor: int, new: NewProfile) -> None:
        self.apply(survivor, new.traits, new.pii, None, new.trait_times)
        self.seen(survivor, new.first_seen_at)
        self.seen(survivor, new.last_seen_at)

    # -- traits --------------------------------------------------------------------------
    def profile_pii(self, profile_id: int) -> dict:
        if profile_id < 0:
            return self.new[profile_id].pii
        if profile_id not in self.pii:
            blob = self.existing[profile_id].pii_encrypted
            self.pii[profile_id] = self.vault.decrypt_json(blob, PROFILE_PII_AAD) if blob else {}
        return self.pii[profile_id]

    def apply(self, profile_id, traits: dict, pii: dict, at: datetime | None, times=None) -> None:
        """Apply traits seen at ``at`` (or per-key ``times`` when folding a new profile)."""
        if profile_id < 0:
            target = self.new[profile_id]
            values, trait_times = target.traits, target.trait_times
        else:
            target = self.existing[profile_id]
            values, trait_times = dict(target.traits), dict(target.trait_times or {})
        if times is not None:
            merge_by_time(values, trait_times, traits, times)
            merge_by_time(self.profile_pii(profile_id), trait_times, pii, times, PII_PREFIX)
        else:
            apply_by_time(values, trait_times, traits, at)
            if pii:
                apply_by_time(self.profile_pii(profile_id), trait_times, pii, at, PII_PREFIX)
        if profile_id > 0:
            target.traits, target.trait_times = values, trait_times

    def seen(self, profile_id: int, at: datetime | None) -> None:
        if at is None:
            return
        target = self.new[profile_id] if profile_id < 0 else self.existing[profile_id]
        target.first_seen_at = _earliest(target.first_seen_at, at)
        target.last_seen_at = _latest(target.last_seen_at, at)

    # -- writing -------------------------------------------------------------------------
    def finish(self) -> dict[int, int]:
        """Insert new profiles and identifiers; return temporary id -> real id."""
        now = utcnow()
        real: dict[int, int] = {}
        if self.new:
            temps = sorted(self.new, reverse=True)
            rows = [
                {
                    "kind": self.new[t].kind,
                    "traits": self.new[t].traits,
                    "trait_times": self.new[t].trait_times,
                    "pii_encrypted": self.vault.encrypt_json(self.new[t].pii, PROFILE_PII_AAD)
                    if self.new[t].pii
                    else None,
                    "name_index": name_index(self.new[t].pii, self.vault),
                    "created_at": now,
                    "updated_at": now,
                    "first_seen_at": self.new[t].first_seen_at,
                    "last_seen_at": self.new[t].last_seen_at,
                }
                for t in temps
            ]
            ids = self.session.scalars(
                sa.insert(Profile).returning(Profile.id, sort_by_parameter_order=True), rows
            ).all()
            real = dict(zip(temps, ids, strict=True))
        for profile_id, pii in self.pii.items():
            profile = self.existing[profile_id]
            profile.pii_encrypted = self.vault.encrypt_json(pii, PROFILE_PII_AAD) if pii else None
            profile.name_index = name_index(pii, self.vault)
        for profile_id in self.touched:
            if profile_id > 0:
                self.existing[profile_id].updated_at = now
        identity_rows = []
        for profile_id, ident in self.new_identities:
            final = self.find(profile_id)
            identity_rows.append(
                {
                    "profile_id": real.get(final, final),
                    "type": ident.type,
                    "namespace": ident.namespace,
                    "value_index": ident.index,
                    "value_encrypted": self.vault.encrypt(ident.value.encode(), ident.type.encode())
                    if ident.spec.sensitive
                    else None,
                    "source_id": self.source_id,
                    "created_at": now,
                }
            )
        if identity_rows:
            self.session.execute(sa.insert(Identity), identity_rows)
        self.session.flush()
        return real

    def final_id(self, profile_id: int | None, real: dict[int, int]) -> int | None:
        if profile_id is None:
            return None
        found = self.find(profile_id)
        return real.get(found, found)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    return min(x for x in (a, b) if x is not None) if (a or b) else None


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    return max(x for x in (a, b) if x is not None) if (a or b) else None
