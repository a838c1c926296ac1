"""Resolve the identifiers of a batch of events to profiles, merging and refusing per the rules.

Runs inside the caller's transaction. For each event, identifiers are taken in
priority order: the first one already known anchors the event to its profile;
each other known identifier pulls its profile into a merge unless that would
join different kinds or break a per-type limit, in which case that (lower
priority) identifier is dropped from the link and a conflict is recorded. New
identifiers are attached unless they would break a limit. Profiles first seen
in the batch get temporary negative ids and are inserted in one statement at
the end, so first-sight links inside a batch cost no merge.

This is the hot path of ingestion, so stored profiles are read as plain rows (only
the columns resolution needs) and written back with one Core ``executemany`` per
statement shape instead of the ORM's per-object flush. On PostgreSQL the profiles
are read ``FOR NO KEY UPDATE`` (in id order, so concurrent batches cannot deadlock
on them): their traits are rewritten from what was read, which must not be stale.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from datetime import datetime

import sqlalchemy as sa

from cdp import audit
from cdp.actors import Actor
from cdp.db import lock_names, utcnow
from cdp.identity.consents import move_consent_records, rebuild_consent_state
from cdp.identity.traits import (
    STORED_COLUMNS,
    NewProfile,
    StoredProfile,
    apply_by_time,
    earliest,
    iso,
    latest,
    merge_by_time,
)
from cdp.identity.types import Identifier
from cdp.models import Event, Identity, IdentityConflict, Merge, Profile
from cdp.models.purchases import move_lines
from cdp.pii import PiiVault
from cdp.profiles import PROFILE_PII_AAD, name_index

PII_PREFIX = "pii."
_CHUNK = 500
_PROFILES = Profile.__table__
_IDENTITIES = Identity.__table__
# Statements are built once: building and hashing (for the compiled cache) a statement
# per call costs more than running it on small batches.


@functools.cache
def _find_owners_statement(groups: int) -> sa.Select:
    """Owners of identifiers of ``groups`` (type, namespace) pairs, each an IN list on the
    unique index (a row-value IN ((type, namespace, value), ...) makes SQLite scan the table)."""
    c = _IDENTITIES.c
    return sa.select(c.type, c.namespace, c.value_index, c.profile_id).where(
        sa.or_(
            *(
                sa.and_(
                    c.type == sa.bindparam(f"t{n}"),
                    c.namespace == sa.bindparam(f"ns{n}"),
                    c.value_index.in_(sa.bindparam(f"v{n}", expanding=True)),
                )
                for n in range(groups)
            )
        )
    )


_LOAD_PROFILES = (
    sa.select(*(_PROFILES.c[name] for name in STORED_COLUMNS))
    .where(_PROFILES.c.id.in_(sa.bindparam("b_ids", expanding=True)))
    .order_by(_PROFILES.c.id)
)
_LOAD_AND_LOCK_PROFILES = _LOAD_PROFILES.with_for_update(key_share=True)  # FOR NO KEY UPDATE
_LOAD_IDENTITIES = sa.select(
    _IDENTITIES.c.profile_id, _IDENTITIES.c.type, _IDENTITIES.c.namespace, _IDENTITIES.c.value_index
).where(_IDENTITIES.c.profile_id.in_(sa.bindparam("b_ids", expanding=True)))
_INSERT_PROFILES = sa.insert(_PROFILES).returning(_PROFILES.c.id, sort_by_parameter_order=True)
_INSERT_IDENTITIES = sa.insert(_IDENTITIES)
# Core executemany UPDATE by id; the SET clause is the other keys of the parameter rows.
_UPDATE_BY_ID = sa.update(_PROFILES).where(_PROFILES.c.id == sa.bindparam("b_id"))


class StaleRead(Exception):
    """What was read changed under us (another transaction); resolve the batch again."""


def _chunks(items: list, size: int = _CHUNK):
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Resolver:
    def __init__(self, session, vault: PiiVault, source_id: str, actor: Actor):
        self.session = session
        self.conn = session.connection()
        self.lock_rows = self.conn.dialect.name == "postgresql"
        self.vault = vault
        self.source_id = source_id
        self.actor = actor
        self.owner: dict[tuple, int] = {}
        self.kinds: dict[int, str] = {}
        self.slots: dict[int, dict[tuple, set]] = defaultdict(lambda: defaultdict(set))
        self.redirect: dict[int, int] = {}
        self.existing: dict[int, StoredProfile] = {}
        self.new: dict[int, NewProfile] = {}
        self.pii: dict[int, dict] = {}  # decrypted PII of stored profiles whose PII was read
        self.pii_loaded: dict[int, dict] = {}  # ... as it was read, to re-encrypt only changes
        self.new_identities: list[tuple[int, Identifier]] = []
        self.touched: set[int] = set()
        self.merged: set[int] = set()
        self.merges = 0
        self.conflicts = 0

    # -- loading -----------------------------------------------------------------------
    def preload(self, identifiers: list[Identifier]) -> None:
        """Find the owners of every identifier of the batch, and those profiles' identifiers."""
        keys = {i.key for i in identifiers}
        self._find_owners(keys)
        new = keys - self.owner.keys()
        if new and self.lock_rows:
            # PostgreSQL: two batches seeing the same person for the first time would both
            # create them, and the later one would fail on the unique index and be redone.
            # Locking the new identifiers makes it wait for the earlier one's commit instead,
            # then find the person it created. (SQLite's write lock already serialises.)
            lock_names(self.conn, ["\x1f".join(key) for key in new])
            self._find_owners(new)
        self._load_profiles(set(self.owner.values()))

    def _find_owners(self, keys: set[tuple[str, str, str]]) -> None:
        groups: dict[tuple[str, str], list[str]] = defaultdict(list)
        for type_, namespace, index in sorted(keys):
            groups[(type_, namespace)].append(index)
        pieces = [(slot, chunk) for slot, indexes in groups.items() for chunk in _chunks(indexes)]
        for start in range(0, len(pieces), 4):  # at most 4 x 500 values a statement
            params = {}
            for n, ((type_, namespace), chunk) in enumerate(pieces[start : start + 4]):
                params.update({f"t{n}": type_, f"ns{n}": namespace, f"v{n}": chunk})
            statement = _find_owners_statement(len(params) // 3)
            for type_, namespace, index, profile_id in self.conn.execute(statement, params):
                self.owner[(type_, namespace, index)] = profile_id

    def _load_profiles(self, ids: set[int]) -> None:
        ids = sorted(i for i in ids if i > 0 and i not in self.existing)
        load = _LOAD_AND_LOCK_PROFILES if self.lock_rows else _LOAD_PROFILES
        merged_into: dict[int, int] = {}
        for chunk in _chunks(ids):
            for row in self.conn.execute(load, {"b_ids": chunk}):
                profile = StoredProfile(**row._mapping)
                profile.traits = dict(profile.traits or {})
                profile.trait_times = dict(profile.trait_times or {})
                self.existing[row.id] = profile
                self.kinds[row.id] = row.kind
                if row.merged_into_id is not None:
                    merged_into[row.id] = row.merged_into_id
            for profile_id, type_, namespace, index in self.conn.execute(
                _LOAD_IDENTITIES, {"b_ids": chunk}
            ):
                self.slots[profile_id][(type_, namespace)].add(index)
        missing = [i for i in ids if i not in self.existing]
        if missing:  # deleted since its identifier was read (PostgreSQL, read committed)
            raise StaleRead(f"{len(missing)} profile(s) went away during resolution")
        # Merged away since its identifier was read (PostgreSQL, read committed): the profile
        # it went into owns that identifier now.
        for loser, survivor in merged_into.items():
            if self.find(survivor) != loser:  # never follow a (corrupt) cycle
                self.redirect[loser] = survivor
        if merged_into:
            self._load_profiles(set(merged_into.values()))

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
        move_lines(self.session, loser, survivor)
        moved_consents = move_consent_records(self.session, None, loser, survivor)
        if moved_consents:
            rebuild_consent_state(self.session, [survivor, loser])
        before = {
            "traits": dict(kept.traits),
            "trait_times": dict(kept.trait_times or {}),
            "first_seen_at": iso(kept.first_seen_at),
            "last_seen_at": iso(kept.last_seen_at),
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
        kept.first_seen_at = earliest(kept.first_seen_at, gone.first_seen_at)
        kept.last_seen_at = latest(kept.last_seen_at, gone.last_seen_at)
        gone.merged_into_id = survivor
        gone.merged_at = utcnow()
        self.merged.add(loser)
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
            pii = self.vault.decrypt_json(blob, PROFILE_PII_AAD) if blob else {}
            self.pii[profile_id], self.pii_loaded[profile_id] = pii, dict(pii)
        return self.pii[profile_id]

    def apply(self, profile_id, traits: dict, pii: dict, at: datetime | None, times=None) -> None:
        """Apply traits seen at ``at`` (or per-key ``times`` when folding a new profile)."""
        if profile_id < 0:
            target = self.new[profile_id]
            values, trait_times = target.traits, target.trait_times
        else:
            target = self.existing[profile_id]  # plain rows (copied when read): change in place
            values, trait_times = target.traits, target.trait_times
        if times is not None:
            merge_by_time(values, trait_times, traits, times)
            merge_by_time(self.profile_pii(profile_id), trait_times, pii, times, PII_PREFIX)
        else:
            apply_by_time(values, trait_times, traits, at)
            if pii:
                apply_by_time(self.profile_pii(profile_id), trait_times, pii, at, PII_PREFIX)

    def seen(self, profile_id: int, at: datetime | None) -> None:
        if at is None:
            return
        target = self.new[profile_id] if profile_id < 0 else self.existing[profile_id]
        target.first_seen_at = earliest(target.first_seen_at, at)
        target.last_seen_at = latest(target.last_seen_at, at)

    # -- writing -------------------------------------------------------------------------
    def finish(self) -> dict[int, int]:
        """Insert new profiles and identifiers, write changed profiles; return temp id -> real id."""
        now = utcnow()
        real = self._insert_new_profiles(now)
        self._update_profiles(now)
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
            self.conn.execute(_INSERT_IDENTITIES, identity_rows)
        self.session.flush()  # conflicts, merges and audit rows were added through the ORM
        return real

    def _insert_new_profiles(self, now: datetime) -> dict[int, int]:
        if not self.new:
            return {}
        temps = sorted(self.new, reverse=True)
        rows = [
            {
                "kind": new.kind,
                "traits": new.traits,
                "trait_times": new.trait_times,
                "pii_encrypted": self.vault.encrypt_json(new.pii, PROFILE_PII_AAD)
                if new.pii
                else None,
                "name_index": name_index(new.pii, self.vault),
                "created_at": now,
                "updated_at": now,
                "first_seen_at": new.first_seen_at,
                "last_seen_at": new.last_seen_at,
            }
            for new in (self.new[temp] for temp in temps)
        ]
        ids = self.conn.execute(_INSERT_PROFILES, rows).scalars().all()
        return dict(zip(temps, ids, strict=True))

    def _update_profiles(self, now: datetime) -> None:
        """Write back every stored profile the batch touched or merged away."""
        dirty = sorted({p for p in self.touched if p > 0} | self.merged)
        if dirty:
            rows = [self.existing[profile_id].update_row(now) for profile_id in dirty]
            self.conn.execute(_UPDATE_BY_ID, rows)
        # Re-encrypting costs an AES-GCM and a blind index per profile: only where PII changed.
        changed = [
            {
                "b_id": profile_id,
                "pii_encrypted": self.vault.encrypt_json(pii, PROFILE_PII_AAD) if pii else None,
                "name_index": name_index(pii, self.vault),
            }
            for profile_id, pii in sorted(self.pii.items())
            if pii != self.pii_loaded[profile_id]
        ]
        if changed:
            self.conn.execute(_UPDATE_BY_ID, changed)

    def final_id(self, profile_id: int | None, real: dict[int, int]) -> int | None:
        if profile_id is None:
            return None
        found = self.find(profile_id)
        return real.get(found, found)
