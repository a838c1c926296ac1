"""Whether a version may go to review (and stay approved): body, channel and drug-law rules."""

from __future__ import annotations

from datetime import datetime

from cdp.content.library import local_date
from cdp.content.rendering import RenderError, sample_render, variables_of
from cdp.content.schemas import (
    body_problems,
    rendered_field_problems,
    sms_problems,
    template_key_problems,
)
from cdp.models.content import AUDIENCES, CATEGORIES, PRODUCT_CLASSES, ContentVersion


def _is_template(text: str) -> bool:
    return "{{" in text or "{%" in text


def static_field_problems(kind: str, body: dict) -> list[tuple[str, str]]:
    """Channel rules checkable before rendering: field names, and fields without variables."""
    fields = body.get("fields") or {}
    if not isinstance(fields, dict):
        return []
    problems = template_key_problems(kind, fields)
    literal = {k: v for k, v in fields.items() if isinstance(v, str) and not _is_template(v)}
    return problems + rendered_field_problems(kind, literal)


def meta_problems(version: ContentVersion) -> list[tuple[str, str]]:
    problems = []
    if version.audience not in AUDIENCES:
        problems.append(("audience", f"audience must be one of {', '.join(AUDIENCES)}"))
    if version.product_class not in PRODUCT_CLASSES:
        problems.append(
            ("product_class", f"product_class must be one of {', '.join(PRODUCT_CLASSES)}")
        )
    if version.category not in CATEGORIES:
        problems.append(("category", f"category must be one of {', '.join(CATEGORIES)}"))
    return problems


def compliance_problems(kind: str, version: ContentVersion) -> list[tuple[str, str]]:
    """The drug-advertising and channel rules a version itself must meet."""
    problems = []
    if version.product_class == "rx" and version.audience != "hcp":
        problems.append(
            ("audience", "prescription (Rx) content may only be addressed to doctors (hcp)")
        )
    if version.product_class in ("rx", "otc") and not version.products:
        problems.append(("products", "name the product(s) this drug content is about"))
    if kind == "wechat_template" and version.category == "marketing":
        problems.append(
            ("category", "WeChat template messages carry service notices only, never marketing")
        )
    if kind == "sms":
        problems += sms_problems((version.body or {}).get("text") or "", version.category)
    return problems


def version_problems(kind: str, version: ContentVersion, at: datetime) -> list[tuple[str, str]]:
    """Everything that keeps a version from review or approval, as (field, message)."""
    body = version.body or {}
    problems = meta_problems(version) + body_problems(kind, body, complete=True)
    if problems:
        return problems
    problems += static_field_problems(kind, body)
    problems += compliance_problems(kind, version)
    if version.expires_on is None:
        problems.append(("expires_on", "an expiry date is required"))
    elif version.expires_on <= local_date(at):
        problems.append(("expires_on", "the expiry date must be in the future"))
    try:
        variables_of(kind, body)
        sample_render(kind, body)
    except RenderError as exc:
        problems.append((exc.field or "body", exc.message))
    return problems
