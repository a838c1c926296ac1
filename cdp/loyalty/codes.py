"""Coupon codes: 60 random bits in Crockford base32 plus a Luhn mod 32 check character.

The check character catches every single mistyped character and most swapped neighbours
before the database is asked, so a typo at the till is refused as a typo, and guessing a
code means guessing 60 bits (about 10^18 values) per attempt.
"""

from __future__ import annotations

import secrets

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford: no I, L, O, U
_INDEX = {ch: i for i, ch in enumerate(ALPHABET)}
# Crockford decoding is forgiving about look-alikes.
_ALIASES = str.maketrans({"O": "0", "I": "1", "L": "1"})
_N = len(ALPHABET)
RANDOM_CHARS = 12
CODE_LENGTH = RANDOM_CHARS + 1


def _luhn_sum(chars: str, double_first: bool) -> int:
    total, double = 0, double_first
    for ch in reversed(chars):
        addend = _INDEX[ch] * (2 if double else 1)
        total += addend // _N + addend % _N
        double = not double
    return total


def check_character(payload: str) -> str:
    """The Luhn mod 32 check character of ``payload`` (already normalised)."""
    return ALPHABET[(_N - _luhn_sum(payload, True) % _N) % _N]


def new_code() -> str:
    """A fresh code from the OS CSPRNG, check character included (13 characters)."""
    payload = "".join(secrets.choice(ALPHABET) for _ in range(RANDOM_CHARS))
    return payload + check_character(payload)


def normalise(text: str) -> str:
    """Upper-case, drop spaces and hyphens, read O as 0 and I/L as 1."""
    return "".join(str(text).split()).replace("-", "").upper().translate(_ALIASES)


def is_valid(code: str) -> bool:
    """True when a normalised code has the right length, alphabet and check character."""
    if len(code) != CODE_LENGTH or any(ch not in _INDEX for ch in code):
        return False
    return _luhn_sum(code, False) % _N == 0


def display(code: str) -> str:
    """Grouped for reading aloud and typing: ``XXXX-XXXX-XXXXX``."""
    return f"{code[:4]}-{code[4:8]}-{code[8:]}"
