"""Sources: the systems that send us data, each with a kind, options and a write key."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from cdp.db import JSONType, UTCDateTime, db, utcnow


class Source(db.Model):
    __tablename__ = "sources"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(120))
    kind: Mapped[str] = mapped_column(sa.String(32))
    # Secrets in the options (app secrets, AES keys) are encrypted with the PII key.
    options_encrypted: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    write_key_prefix: Mapped[str | None] = mapped_column(sa.String(16), unique=True)
    write_key_hash: Mapped[str | None] = mapped_column(sa.String(64))
    enabled: Mapped[bool] = mapped_column(default=True)
    # Profiles first seen through this source are of this kind (patient or hcp).
    default_profile_kind: Mapped[str] = mapped_column(
        sa.String(16), default="patient", server_default="patient"
    )
    # {"mode": "allow" | "flag" | "block", "events": {"<event name>": <JSON Schema of properties>}}
    tracking_plan: Mapped[dict | None] = mapped_column(JSONType)
    last_event_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL")
    )
