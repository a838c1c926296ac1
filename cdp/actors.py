"""Who is acting: passed explicitly into domain operations instead of read from the request."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Actor:
    kind: str  # user | token | system | anonymous
    user_id: int | None = None
    role: str | None = None
    ip: str | None = None
    request_id: str | None = None
    token_id: int | None = None

    @property
    def audit_id(self) -> str | None:
        return str(self.user_id) if self.user_id is not None else None

    @classmethod
    def system(cls, what: str = "cli") -> Actor:
        return cls(kind="system", role="admin", request_id=what)


SYSTEM = Actor.system()
