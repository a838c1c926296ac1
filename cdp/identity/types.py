"""Identifier types: how each is namespaced, normalised, protected, limited and ranked."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import phonenumbers

from cdp.exceptions import ValidationFailed
from cdp.pii import PiiVault

MAX_VALUE_LENGTH = 128


def _strip(value: str) -> str:
    return value.strip()


def normalise_phone(value: str) -> str:
    """E.164 form of a phone number (default region CN); ValidationFailed if not a number."""
    ok, result = _parse_phone(value)
    if not ok:
        raise ValidationFailed(result)
    return result


# phonenumbers takes ~40 µs a number and people send the same phone again and again. The
# cache is bounded (a few MB); it holds numbers this process has just seen anyway, and the
# PII keys in the same memory protect far more than it does.
@lru_cache(maxsize=16384)
def _parse_phone(value: str) -> tuple[bool, str]:
    """(True, E.164 form) or (False, why not)."""
    try:
        number = phonenumbers.parse(value, "CN")
    except phonenumbers.NumberParseException as exc:
        return False, f"not a phone number: {exc}"
    if not phonenumbers.is_valid_number(number):
        return False, "not a valid phone number"
    return True, phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_email(value: str) -> str:
    value = value.strip().lower()
    if "@" not in value or value.startswith("@") or value.endswith("@"):
        raise ValidationFailed("not an e-mail address")
    return value


@dataclass(frozen=True)
class IdentityType:
    name: str
    priority: int  # higher wins when a link must drop an identifier
    namespaced: bool = False
    sensitive: bool = False  # personal data: stored encrypted, looked up by blind index
    max_per_profile: int | None = None  # per namespace; None = unlimited
    hcp_only: bool = False
    normalise: object = _strip


IDENTITY_TYPES: dict[str, IdentityType] = {
    t.name: t
    for t in (
        IdentityType("hcp_license", 100, max_per_profile=1, hcp_only=True),
        IdentityType("wechat_unionid", 90, max_per_profile=1),
        IdentityType("user_id", 85, max_per_profile=1),
        IdentityType("phone", 80, sensitive=True, max_per_profile=3, normalise=normalise_phone),
        IdentityType("email", 70, sensitive=True, max_per_profile=5, normalise=normalise_email),
        IdentityType("pharmacy_member", 60, namespaced=True, max_per_profile=1),
        IdentityType("ecommerce_buyer", 55, namespaced=True, max_per_profile=3),
        IdentityType("miniprogram_openid", 50, namespaced=True, max_per_profile=1),
        IdentityType("wechat_openid", 40, namespaced=True, max_per_profile=1),
        IdentityType("device_id", 20),
        IdentityType("anonymous_id", 10),
    )
}


@dataclass(frozen=True)
class Identifier:
    """A normalised identifier of an event, ready to look up (value kept for encryption only)."""

    type: str
    namespace: str
    value: str
    index: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.type, self.namespace, self.index)

    @property
    def slot(self) -> tuple[str, str]:
        """What a per-profile limit counts: the type within its namespace."""
        return (self.type, self.namespace)

    @property
    def spec(self) -> IdentityType:
        return IDENTITY_TYPES[self.type]

    @property
    def label(self) -> str:
        return f"{self.type}:{self.namespace}" if self.namespace else self.type


def make_identifier(vault: PiiVault, type_: str, value, namespace: str | None = None) -> Identifier:
    """Validate and normalise one identifier; ValidationFailed names what is wrong."""
    spec = IDENTITY_TYPES.get(type_)
    if spec is None:
        raise ValidationFailed(f"unknown identifier type '{type_}'")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValidationFailed(f"{type_} must be a string")
    value = spec.normalise(str(value))
    if not value:
        raise ValidationFailed(f"{type_} is empty")
    namespace = (namespace or "").strip()
    if spec.namespaced and not namespace:
        raise ValidationFailed(f"{type_} needs a collection (e.g. the app id)")
    if not spec.namespaced:
        namespace = ""
    if len(value) > MAX_VALUE_LENGTH or len(namespace) > 64:
        raise ValidationFailed(f"{type_} is longer than {MAX_VALUE_LENGTH} characters")
    index = vault.blind_index(type_, value) if spec.sensitive else value
    return Identifier(type_, namespace, value, index)


def parse_identifier(text: str) -> tuple[str, str, str]:
    """Split ``type[:namespace]:value`` (as in ``?identifier=``) into its three parts."""
    type_, sep, rest = text.partition(":")
    if not sep or type_ not in IDENTITY_TYPES:
        raise ValidationFailed("expected type[:namespace]:value with a known type", "identifier")
    if IDENTITY_TYPES[type_].namespaced:
        namespace, sep, value = rest.partition(":")
        if not sep:
            raise ValidationFailed(f"{type_} needs a namespace: {type_}:<ns>:<value>", "identifier")
        return type_, namespace, value
    return type_, "", rest
