"""Who a send goes to: a profile's phone number (decrypted) or its openids per app id.

Identifiers follow a person through merges (the survivor holds them), so the profile is
resolved to its live one first. Phone numbers are stored encrypted (E.164, associated
data = the identifier type, as the resolver writes them); the newest one is used.
"""

from __future__ import annotations

import sqlalchemy as sa

from cdp.db import db
from cdp.models import Identity
from cdp.pii import vault
from cdp.profiles import live_profile_id
from journeys.channels.base import PermanentError


def _live(profile_id: int) -> int:
    live = live_profile_id(profile_id)
    if live is None:
        raise PermanentError("no_such_profile", f"profile {profile_id} does not exist")
    return live


def phone_of(profile_id: int) -> str:
    """The profile's newest phone number (E.164), or ``PermanentError('no_recipient')``."""
    blob = db.session.scalar(
        sa.select(Identity.value_encrypted)
        .where(
            Identity.profile_id == _live(profile_id),
            Identity.type == "phone",
            Identity.value_encrypted.is_not(None),
        )
        .order_by(Identity.id.desc())
        .limit(1)
    )
    if blob is None:
        raise PermanentError("no_recipient", "the profile has no phone number", unreachable=True)
    return vault().decrypt(blob, b"phone").decode()


def openids_of(profile_id: int, type_: str) -> list[tuple[str, str]]:
    """(app id, openid) pairs of a ``wechat_openid`` / ``miniprogram_openid`` type, newest first."""
    rows = db.session.execute(
        sa.select(Identity.namespace, Identity.value_index)
        .where(Identity.profile_id == _live(profile_id), Identity.type == type_)
        .order_by(Identity.id.desc())
    )
    return [(namespace, value) for namespace, value in rows]
