"""Content workflow: draft -> submitted -> approved | rejected, then expired or withdrawn.

Only reviewers (and admins) approve, never a version they wrote, edited or submitted.
Approving freezes a version and records the hash of what was approved; edits after that
make a new draft. Every transition is kept with its comment and written to the audit log.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime

import sqlalchemy as sa

from cdp import audit
from cdp.actors import Actor
from cdp.auth.permissions import allowed, require
from cdp.content.library import (
    META_FIELDS,
    content_hash,
    contributors,
    get_item,
    get_version,
    local_date,
    versions_of,
)
from cdp.content.rendering import RenderError, variables_of
from cdp.content.sanitize import sanitise_html
from cdp.content.schemas import body_problems
from cdp.content.validation import meta_problems, version_problems
from cdp.db import db, transaction, utcnow
from cdp.exceptions import Conflict, PermissionDenied, ValidationFailed
from cdp.models.content import CONTENT_KINDS, ContentItem, ContentTransition, ContentVersion

# fn(version_id) run after a version is withdrawn or expires: the journey engine registers
# one to cancel pending sends of it (guards also refuse it at send time).
WITHDRAW_HOOKS: dict[str, Callable[[int], object]] = {}


ACTIONS = {
    "draft": "content.edit",
    "submitted": "content.submit",
    "approved": "content.approve",
    "rejected": "content.reject",
    "withdrawn": "content.withdraw",
    "expired": "content.expire",
}


def register_withdraw_hook(name: str, fn: Callable[[int], object]) -> None:
    WITHDRAW_HOOKS[name] = fn


def _clean_products(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [p for p in value.replace("，", ",").split(",")]
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise ValidationFailed("products must be a list of product names", "products")
    products = [p.strip()[:100] for p in value if p.strip()]
    if len(products) > 20:
        raise ValidationFailed("at most 20 products", "products")
    return products


def _clean_date(value) -> date | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ValidationFailed("expiry date must be YYYY-MM-DD", "expires_on") from None


def _clean_body(kind: str, body: dict) -> dict:
    problems = body_problems(kind, body, complete=False)
    if problems:
        raise ValidationFailed(problems[0][1], problems[0][0])
    if kind == "article" and isinstance(body.get("html"), str):
        body = {**body, "html": sanitise_html(body["html"])}
    return body


def _apply(kind: str, version: ContentVersion, fields: dict) -> None:
    """Set editable fields of a draft (drafts may be incomplete; submit checks the rest)."""
    unknown = set(fields) - {"body", *META_FIELDS}
    if unknown:
        raise ValidationFailed(f"unknown field '{sorted(unknown)[0]}'", sorted(unknown)[0])
    if "body" in fields:
        version.body = _clean_body(kind, fields["body"] or {})
    if "products" in fields:
        version.products = _clean_products(fields["products"])
    if "expires_on" in fields:
        version.expires_on = _clean_date(fields["expires_on"])
    for name in ("audience", "product_class", "category"):
        if fields.get(name) is not None:
            setattr(version, name, str(fields[name]))
    if "therapeutic_area" in fields:
        version.therapeutic_area = str(fields["therapeutic_area"] or "")[:100]
    if "approval_code" in fields:
        code = str(fields["approval_code"] or "").strip()
        if len(code) > 64:
            raise ValidationFailed("approval code is at most 64 characters", "approval_code")
        version.approval_code = code or None
    problems = meta_problems(version)
    if problems:
        raise ValidationFailed(problems[0][1], problems[0][0])
    try:
        version.variables = variables_of(kind, version.body or {})
    except RenderError:
        version.variables = []  # a broken template may be saved as a draft; submit refuses it
    version.updated_at = utcnow()


def _transition(
    actor: Actor, version: ContentVersion, to: str, comment: str = "", created: bool = False
) -> None:
    before = None if created else version.status
    version.status = to
    version.updated_at = utcnow()
    db.session.add(
        ContentTransition(
            version_id=version.id,
            from_status=before,
            to_status=to,
            actor_id=actor.user_id,
            comment=comment,
        )
    )
    action = "content.new_version" if created else ACTIONS[to]
    audit.record(
        actor,
        action,
        "content_version",
        version.id,
        item_id=version.item_id,
        number=version.number,
        from_status=before,
        to_status=to,
    )


def _blank_version(item_id: int, number: int, actor: Actor) -> ContentVersion:
    return ContentVersion(
        item_id=item_id,
        number=number,
        status="draft",
        author_id=actor.user_id,
        body={},
        audience="patient",
        products=[],
        product_class="non_drug",
        therapeutic_area="",
        category="service",
        variables=[],
    )


def create_item(actor: Actor, name: str, kind: str, **fields) -> ContentVersion:
    """A new content item with its first (draft) version."""
    require(actor, "content:edit")
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise ValidationFailed("a name of 1 to 200 characters is required", "name")
    if kind not in CONTENT_KINDS:
        raise ValidationFailed(f"kind must be one of {', '.join(CONTENT_KINDS)}", "kind")
    with transaction() as session:
        item = ContentItem(name=name, kind=kind, created_by_id=actor.user_id)
        session.add(item)
        session.flush()
        version = _blank_version(item.id, 1, actor)
        _apply(kind, version, fields)
        session.add(version)
        session.flush()
        audit.record(actor, "content.create", "content_item", item.id, kind=kind)
        _transition(actor, version, "draft", created=True)
    return version


def update_draft(actor: Actor, version_id: int, **fields) -> ContentVersion:
    require(actor, "content:edit")
    with transaction():
        version = get_version(version_id)
        if version.status != "draft":
            if version.status == "approved":
                raise Conflict("approved versions are frozen; create a new version", "status")
            raise Conflict(f"only drafts can be edited (this one is {version.status})", "status")
        _apply(get_item(version.item_id).kind, version, fields)
        _transition(actor, version, "draft")
    return version


def new_version(actor: Actor, item_id: int, **fields) -> ContentVersion:
    """A new draft, starting from the item's latest version (edits of approved content)."""
    require(actor, "content:edit")
    with transaction() as session:
        item = get_item(item_id)
        versions = versions_of(item_id)
        open_draft = next((v for v in versions if v.status == "draft"), None)
        if open_draft is not None:
            raise Conflict(f"version {open_draft.number} is still a draft; edit it", "version")
        latest = versions[0] if versions else None
        version = _blank_version(item.id, (latest.number + 1) if latest else 1, actor)
        version.body = dict(latest.body or {}) if latest else {}
        if latest is not None:
            for name in META_FIELDS:
                setattr(version, name, getattr(latest, name))
            version.products = list(latest.products or [])
            version.approval_code = None  # a new version needs its own MLR number
        _apply(item.kind, version, fields)
        session.add(version)
        session.flush()
        item.updated_at = utcnow()
        _transition(actor, version, "draft", created=True)
    return version


def _refuse(problems: list[tuple[str, str]]) -> None:
    if problems:
        field, message = problems[0]
        raise ValidationFailed(message, field)


def submit(actor: Actor, version_id: int, comment: str = "") -> ContentVersion:
    require(actor, "content:edit")
    with transaction():
        version = get_version(version_id)
        if version.status != "draft":
            raise Conflict(f"only drafts can be submitted (this one is {version.status})", "status")
        _refuse(version_problems(get_item(version.item_id).kind, version, utcnow()))
        version.submitted_at = utcnow()
        version.submitted_by_id = actor.user_id
        _transition(actor, version, "submitted", comment)
    return version


def _reviewable(actor: Actor, version_id: int) -> ContentVersion:
    require(actor, "content:review")
    version = get_version(version_id)
    if version.status != "submitted":
        raise Conflict(f"only submitted versions can be reviewed (this one is {version.status})")
    if actor.user_id is None:
        raise PermissionDenied("approval and rejection need a named reviewer account")
    return version


def approve(
    actor: Actor, version_id: int, comment: str = "", approval_code: str | None = None
) -> ContentVersion:
    """Approve (and freeze) a submitted version; never by one of its own contributors."""
    version = _reviewable(actor, version_id)
    if actor.user_id in contributors(version):
        with transaction():
            audit.record(actor, "content.approve", "content_version", version.id, outcome="denied")
        raise PermissionDenied("you cannot approve content you wrote, edited or submitted")
    with transaction():
        version = get_version(version_id)
        kind = get_item(version.item_id).kind
        if approval_code is not None and approval_code.strip():
            version.approval_code = approval_code.strip()[:64]
        if not version.approval_code:
            raise ValidationFailed("an approval code (MLR number) is required", "approval_code")
        _refuse(version_problems(kind, version, utcnow()))
        version.reviewed_at = utcnow()
        version.reviewed_by_id = actor.user_id
        version.approved_hash = content_hash(version, kind)
        _transition(actor, version, "approved", comment)
    return version


def reject(actor: Actor, version_id: int, comment: str) -> ContentVersion:
    if not (comment or "").strip():
        raise ValidationFailed("say why the version is rejected", "comment")
    version = _reviewable(actor, version_id)
    with transaction():
        version.reviewed_at = utcnow()
        version.reviewed_by_id = actor.user_id
        _transition(actor, version, "rejected", comment.strip())
    return version


def withdraw(actor: Actor, version_id: int, comment: str = "") -> ContentVersion:
    """Withdraw a submitted or approved version: pending sends of it stop."""
    if not (allowed(actor.role, "content:review") or allowed(actor.role, "content:edit")):
        require(actor, "content:review")
    with transaction():
        version = get_version(version_id)
        if version.status not in ("submitted", "approved"):
            raise Conflict(f"a {version.status} version cannot be withdrawn", "status")
        _transition(actor, version, "withdrawn", comment)
    _run_withdraw_hooks(version.id)
    return version


def _run_withdraw_hooks(version_id: int) -> None:
    for fn in WITHDRAW_HOOKS.values():
        fn(version_id)


def expire_due(actor: Actor, at: datetime | None = None) -> int:
    """Mark approved versions past their expiry date as expired; return how many."""
    today = local_date(at or utcnow())
    with transaction() as session:
        due = list(
            session.scalars(
                sa.select(ContentVersion).where(
                    ContentVersion.status == "approved", ContentVersion.expires_on < today
                )
            )
        )
        for version in due:
            _transition(actor, version, "expired")
    for version in due:
        _run_withdraw_hooks(version.id)
    return len(due)
