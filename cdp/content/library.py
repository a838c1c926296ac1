"""Reading the content library: items, versions, their review history, the review queue."""

from __future__ import annotations

import hashlib
from datetime import date, datetime
from zoneinfo import ZoneInfo

import orjson
import sqlalchemy as sa
from flask import current_app

from cdp.db import db
from cdp.exceptions import NotFound
from cdp.models.content import ContentItem, ContentTransition, ContentVersion

# Fields a version carries besides its body; all of them are frozen on approval.
META_FIELDS = (
    "audience",
    "products",
    "product_class",
    "therapeutic_area",
    "category",
    "expires_on",
    "approval_code",
)


def local_date(at: datetime) -> date:
    """The calendar day of ``at`` in the platform time zone (expiry dates are local days)."""
    return at.astimezone(ZoneInfo(current_app.config.get("TIMEZONE", "Asia/Shanghai"))).date()


def content_hash(version: ContentVersion, kind: str) -> str:
    """SHA-256 over everything a reviewer approved; any later change alters it."""
    frozen = {name: getattr(version, name) for name in META_FIELDS}
    frozen["expires_on"] = version.expires_on.isoformat() if version.expires_on else None
    frozen.update(
        kind=kind, item_id=version.item_id, number=version.number, body=version.body or {}
    )
    return hashlib.sha256(orjson.dumps(frozen, option=orjson.OPT_SORT_KEYS)).hexdigest()


def get_item(item_id: int) -> ContentItem:
    item = db.session.get(ContentItem, item_id)
    if item is None:
        raise NotFound("no such content item", "content_id")
    return item


def get_version(version_id: int) -> ContentVersion:
    version = db.session.get(ContentVersion, version_id)
    if version is None:
        raise NotFound("no such content version", "version_id")
    return version


def version_by_number(item_id: int, number: int) -> ContentVersion:
    version = db.session.scalar(
        sa.select(ContentVersion).where(
            ContentVersion.item_id == item_id, ContentVersion.number == number
        )
    )
    if version is None:
        raise NotFound("no such version of this content item", "version")
    return version


def versions_of(item_id: int) -> list[ContentVersion]:
    return list(
        db.session.scalars(
            sa.select(ContentVersion)
            .where(ContentVersion.item_id == item_id)
            .order_by(ContentVersion.number.desc())
        )
    )


def latest_versions(item_ids: list[int]) -> dict[int, ContentVersion]:
    """The highest-numbered version of each item."""
    newest = (
        sa.select(ContentVersion.item_id, sa.func.max(ContentVersion.number).label("number"))
        .where(ContentVersion.item_id.in_(item_ids))
        .group_by(ContentVersion.item_id)
        .subquery()
    )
    rows = db.session.scalars(
        sa.select(ContentVersion).join(
            newest,
            sa.and_(
                ContentVersion.item_id == newest.c.item_id,
                ContentVersion.number == newest.c.number,
            ),
        )
    )
    return {v.item_id: v for v in rows}


def list_items(
    status: str | None = None, kind: str | None = None, limit: int = 100, after_id: int = 0
) -> list[ContentItem]:
    """Items by id; with ``status``, only items having a version in that status."""
    query = sa.select(ContentItem).where(ContentItem.id > after_id)
    if kind:
        query = query.where(ContentItem.kind == kind)
    if status:
        query = query.where(
            ContentItem.id.in_(
                sa.select(ContentVersion.item_id).where(ContentVersion.status == status)
            )
        )
    return list(db.session.scalars(query.order_by(ContentItem.id).limit(limit)))


def review_queue(limit: int = 100) -> list[tuple[ContentItem, ContentVersion]]:
    """Submitted versions, oldest submission first."""
    rows = db.session.execute(
        sa.select(ContentItem, ContentVersion)
        .join(ContentVersion, ContentVersion.item_id == ContentItem.id)
        .where(ContentVersion.status == "submitted")
        .order_by(ContentVersion.submitted_at, ContentVersion.id)
        .limit(limit)
    )
    return [(item, version) for item, version in rows]


def transitions_of(version_ids: list[int]) -> list[ContentTransition]:
    return list(
        db.session.scalars(
            sa.select(ContentTransition)
            .where(ContentTransition.version_id.in_(version_ids))
            .order_by(ContentTransition.id.desc())
        )
    )


def contributors(version: ContentVersion) -> set[int]:
    """Users who wrote, edited or submitted a version: none of them may approve it."""
    ids = set(
        db.session.scalars(
            sa.select(ContentTransition.actor_id).where(
                ContentTransition.version_id == version.id,
                ContentTransition.to_status.in_(("draft", "submitted")),
                ContentTransition.actor_id.is_not(None),
            )
        )
    )
    ids |= {i for i in (version.author_id, version.submitted_by_id) if i is not None}
    return ids
