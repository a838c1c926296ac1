"""Partner member sync: validate rows, link cards to profiles through ingestion, record consent.

Each changed row becomes a canonical ``identify`` message on the partner's source, with
the card as ``context.externalIds`` (``pharmacy_member:<partner code>``) and the phone as a
trait, so cards join profiles (and profiles merge by phone) exactly as for every other
connector. A keyed digest of each row makes a row sent again "unchanged": the same file
twice changes nothing. Personal data goes to the profile (encrypted); the member row keeps
the card, store, dates, consent flags and the digest only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime

import orjson
import sqlalchemy as sa

from cdp.exceptions import ValidationFailed
from cdp.identity.types import normalise_phone
from cdp.models import Identity
from cdp.models.loyalty import Member, Partner
from cdp.pii import vault

MAX_ROWS = 10_000
FIELDS = (
    "card_no",
    "phone",
    "name",
    "gender",
    "birth_date",
    "store_code",
    "joined_at",
    "consents",
)
# consent flag -> (purpose, channel) of cdp.consent
CONSENT_FLAGS = {
    "marketing": ("marketing", "*"),
    "sms": ("marketing", "sms"),
    "wechat": ("marketing", "wechat"),
    "phone": ("marketing", "phone"),
    "email": ("marketing", "email"),
    "health_data": ("health_data", "*"),
    "third_party_sharing": ("third_party_sharing", "*"),
}
GENDERS = {
    "m": "male",
    "male": "male",
    "男": "male",
    "f": "female",
    "female": "female",
    "女": "female",
    "u": "unknown",
    "unknown": "unknown",
    "未知": "unknown",
}
_CARD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")


class RowRejected(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class MemberRow:
    index: int
    card_no: str
    phone: str | None
    name: str | None
    gender: str | None
    birth_date: str | None
    store_code: str | None
    joined_at: datetime | None
    consents: dict
    digest: str = ""


def _text(raw: dict, field: str, limit: int) -> str | None:
    value = raw.get(field)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise RowRejected(f"{field}: expected text")
    value = str(value).strip()
    if len(value) > limit:
        raise RowRejected(f"{field}: longer than {limit} characters")
    return value or None


def _birth_date(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        born = date.fromisoformat(text)
    except ValueError:
        raise RowRejected("birth_date: expected YYYY-MM-DD") from None
    if born.year < 1900 or born > date.today():
        raise RowRejected("birth_date: not a plausible date of birth")
    return born.isoformat()


def _joined_at(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise RowRejected("joined_at: expected an ISO 8601 date or date-time") from None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)


def _consents(value) -> dict:
    if value in (None, ""):
        return {}
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise RowRejected('consents: expected a JSON object like {"sms": true}') from None
    if not isinstance(value, dict):
        raise RowRejected('consents: expected an object like {"sms": true}')
    flags = {}
    for key, flag in value.items():
        if key not in CONSENT_FLAGS:
            raise RowRejected(f"consents.{key}: unknown (known: {', '.join(CONSENT_FLAGS)})")
        if not isinstance(flag, bool):
            raise RowRejected(f"consents.{key}: expected true or false")
        flags[key] = flag
    return dict(sorted(flags.items()))


def normalise_row(index: int, raw, stores: set[str]) -> MemberRow:
    """One upload row as a member, or RowRejected naming the field."""
    if not isinstance(raw, dict):
        raise RowRejected("row: expected an object")
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise RowRejected(f"{unknown[0]}: unknown field (known: {', '.join(FIELDS)})")
    card_no = _text(raw, "card_no", 64)
    if card_no is None:
        raise RowRejected("card_no: required")
    if not _CARD.match(card_no):
        raise RowRejected("card_no: letters, digits, '_' and '-' only")
    phone = _text(raw, "phone", 32)
    if phone is not None:
        try:
            phone = normalise_phone(phone)
        except ValidationFailed as exc:
            raise RowRejected(f"phone: {exc.message}") from None
    gender = _text(raw, "gender", 16)
    if gender is not None:
        if gender.lower() not in GENDERS:
            raise RowRejected(
                "gender: use M/F/U, male/female/unknown or 男/女/未知 (numeric codes differ "
                "between POS systems)"
            )
        gender = GENDERS[gender.lower()]
    store_code = _text(raw, "store_code", 64)
    if store_code is not None and store_code not in stores:
        raise RowRejected(f"store_code: '{store_code}' is not one of your stores")
    return MemberRow(
        index=index,
        card_no=card_no,
        phone=phone,
        name=_text(raw, "name", 50),
        gender=gender,
        birth_date=_birth_date(_text(raw, "birth_date", 10)),
        store_code=store_code,
        joined_at=_joined_at(_text(raw, "joined_at", 40)),
        consents=_consents(raw.get("consents")),
    )


def row_digest(partner_id: int, row: MemberRow) -> str:
    """Keyed hash of everything the row says (personal data included, so never a plain hash)."""
    canonical = orjson.dumps(
        [
            partner_id,
            row.card_no,
            row.phone,
            row.name,
            row.gender,
            row.birth_date,
            row.store_code,
            row.joined_at.isoformat() if row.joined_at else None,
            row.consents,
        ]
    )
    return vault().blind_index("loyalty_member_row", canonical.decode())


def identify_message(partner: Partner, row: MemberRow) -> dict:
    """The canonical identify message of a member row (the card links, the phone may merge)."""
    traits = {"phone": row.phone, "name": row.name, "gender": row.gender}
    traits["birth_date"] = row.birth_date
    return {
        "type": "identify",
        "messageId": f"member:{row.card_no}:{row.digest[:24]}",
        "context": {
            "externalIds": [
                {"type": "pharmacy_member", "collection": partner.code, "id": row.card_no}
            ],
            "profileKind": "patient",
        },
        "traits": {k: v for k, v in traits.items() if v is not None},
    }


def card_profiles(session, partner: Partner, cards: list[str]) -> dict[str, int]:
    """card no -> profile id holding that card now."""
    found: dict[str, int] = {}
    for start in range(0, len(cards), 500):
        found.update(
            session.execute(
                sa.select(Identity.value_index, Identity.profile_id).where(
                    Identity.type == "pharmacy_member",
                    Identity.namespace == partner.code,
                    Identity.value_index.in_(cards[start : start + 500]),
                )
            ).all()
        )
    return found


def existing_members(session, partner_id: int, cards: list[str]) -> dict[str, Member]:
    found: dict[str, Member] = {}
    for start in range(0, len(cards), 500):
        for member in session.scalars(
            sa.select(Member).where(
                Member.partner_id == partner_id, Member.card_no.in_(cards[start : start + 500])
            )
        ):
            found[member.card_no] = member
    return found
