"""Sources: the systems that send us data, each with a kind, options and a write key."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from cdp.db import UTCDateTime, db, utcnow


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
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL")
    )
