"""Demo consents: what each generated person agreed to (and sometimes took back), in bulk.

Drawn from the generator's own consent RNG, seeded apart from the people's, so adding consents
left the people and events of a seed as they were. Rows are written with Core ``executemany``
like the rest of the demo data.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from cdp.models import ConsentRecord, ConsentState

CONSENT_COLUMNS = ("profile_id", "purpose", "channel", "status", "recorded_at", "source_id")
CONSENT_COLUMNS += ("evidence", "actor")
INSERT_ROWS = 10_000  # rows per executemany

# Consents the demo people gave: (purpose, channel, share, asked of whom). A channel's
# marketing consent is asked only of people the brand reaches there ("phone": those whose
# number it has), so of all patients about 50% grant WeChat, 40% mini-program, 35% SMS.
PATIENT_CONSENTS: tuple[tuple[str, str, float, str | None], ...] = (
    ("health_data", "*", 0.6, None),  # PIPL: medicine purchases used for segments, refills
    ("marketing", "wechat", 0.7, "wechat"),
    ("marketing", "miniprogram", 0.8, "miniprogram"),
    ("marketing", "sms", 0.42, "phone"),
)
HCP_CONSENTS: tuple[tuple[str, str, float, str | None], ...] = (
    ("marketing", "wechat", 0.85, "wechat"),
)
CONSENT_WITHDRAWN_LATER = 0.05  # a grant taken back later (unfollow, 回T退订, settings page)
AUTOMATED_MARKETING_REFUSED = 0.03  # PIPL Art. 24: "do not target me with automated marketing"
PRIVACY_POLICY_VERSION = "2024-07"


class ConsentDraws:
    """Mixin of the demo generator: buffers consent records in ``self.consents``.

    Needs ``consent_rng``, ``now``, ``source_ids`` and ``consents`` on the instance.
    """

    consent_rng: object
    now: datetime
    source_ids: dict[str, str]
    consents: list[dict]

    def _consents(self, person, kind: str, first, first_on, has_phone: bool) -> None:
        """Consents given on joining a channel (some taken back later), a few refusals."""
        rng, reached = self.consent_rng, {*person.channels, *(("phone",) if has_phone else ())}
        asked = PATIENT_CONSENTS if kind == "patient" else HCP_CONSENTS
        for purpose, channel, share, needs in asked:
            if (needs is None or needs in reached) and rng.random() < share:
                at = first_on.get(needs, first) if needs else first
                self._consent(person, purpose, channel, "granted", at)
                if rng.random() < CONSENT_WITHDRAWN_LATER:
                    self._consent(person, purpose, channel, "withdrawn", self._after(at))
        if rng.random() < AUTOMATED_MARKETING_REFUSED:
            self._consent(person, "automated_marketing", "*", "withdrawn", self._after(first))

    def _after(self, at: datetime) -> datetime:
        return at + (self.now - at) * self.consent_rng.random()

    def _consent(self, person, purpose: str, channel: str, status: str, at) -> None:
        source_id = self.source_ids.get(channel) or self.source_ids[person.channels[0]]
        evidence = {"via": "demo_seed", "policy_version": PRIVACY_POLICY_VERSION}
        values = (person.id, purpose, channel, status, at, source_id, evidence, "system")
        self.consents.append(dict(zip(CONSENT_COLUMNS, values, strict=True)))


def insert_consents(session, rows: list[dict]) -> None:
    """The records, then each key's latest as the current state (it needs the record id)."""
    records = ConsentRecord.__table__
    latest = {}
    for i in range(0, len(rows), INSERT_ROWS):
        chunk = rows[i : i + INSERT_ROWS]
        insert = sa.insert(records).returning(records.c.id, sort_by_parameter_order=True)
        for row, record_id in zip(chunk, session.scalars(insert, chunk).all(), strict=True):
            key = (row["profile_id"], row["purpose"], row["channel"])
            latest[key] = (row["status"], row["recorded_at"], record_id)
    names = ("profile_id", "purpose", "channel", "status", "updated_at", "record_id")
    states = [dict(zip(names, (*key, *state), strict=True)) for key, state in latest.items()]
    for i in range(0, len(states), INSERT_ROWS):
        session.execute(sa.insert(ConsentState.__table__), states[i : i + INSERT_ROWS])
