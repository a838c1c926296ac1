"""Password hashing with argon2id at OWASP's recommended cost."""

from __future__ import annotations

from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from cdp.exceptions import ValidationFailed

# OWASP minimum for argon2id: m=19 MiB, t=2, p=1 (about 22 ms a hash here).
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


@cache
def _dummy_hash() -> str:
    # Verifying against this keeps a login for an unknown e-mail as slow as a real one.
    return _hasher.hash("carepath-timing-equaliser")


MIN_LENGTH = 10
MAX_LENGTH = 128


def check_strength(password: str) -> None:
    """Refuse passwords that are too short or too long (ASVS 6.2.1, 6.2.9)."""
    if len(password) < MIN_LENGTH:
        raise ValidationFailed(f"password must be at least {MIN_LENGTH} characters", "password")
    if len(password) > MAX_LENGTH:
        raise ValidationFailed(f"password must be at most {MAX_LENGTH} characters", "password")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash or _dummy_hash(), password) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False
