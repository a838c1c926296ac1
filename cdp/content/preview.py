"""Preview a version as a chosen profile: the rendered message and whether it could be sent.

Personal data decrypted for a preview (``profile.name`` in a greeting) is audited: every
preview writes an audit row naming the profile and the personal fields used (never values).
"""

from __future__ import annotations

from datetime import datetime

from cdp import audit
from cdp.actors import Actor
from cdp.auth.permissions import require
from cdp.content.guards import send_problems
from cdp.content.library import get_item, get_version
from cdp.content.rendering import RenderError, pii_fields_needed, profile_values, render_body
from cdp.content.schemas import KIND_CHANNELS, rendered_field_problems
from cdp.db import transaction, utcnow
from cdp.exceptions import ValidationFailed
from cdp.profiles import get_live_profile


def preview(
    actor: Actor,
    version_id: int,
    profile_id: int,
    context: dict | None = None,
    channel: str | None = None,
    at: datetime | None = None,
) -> dict:
    """Render a version for a profile; report render problems and send-guard refusals."""
    require(actor, "content:preview")
    version = get_version(version_id)
    item = get_item(version.item_id)
    channels = KIND_CHANNELS[item.kind]
    channel = channel or channels[0]
    if channel not in channels:
        raise ValidationFailed(f"{item.kind} content goes by {', '.join(channels)}", "channel")
    profile = get_live_profile(profile_id)
    variables = version.variables or []
    pii_fields = pii_fields_needed(variables)
    problems: list[str] = []
    message = None
    try:
        message = render_body(
            item.kind, version.body or {}, profile_values(profile, variables), dict(context or {})
        )
    except RenderError as exc:
        problems.append(exc.message)
    if message and message.get("data"):
        fields = {k: v["value"] for k, v in message["data"].items()}
        problems += [f"{where}: {why}" for where, why in rendered_field_problems(item.kind, fields)]
    blocked = send_problems(version, profile, channel, at or utcnow())
    with transaction():
        audit.record(
            actor,
            "content.preview",
            "content_version",
            version.id,
            profile_id=profile.id,
            pii_fields=pii_fields,
        )
    return {
        "version_id": version.id,
        "profile_id": profile.id,
        "channel": channel,
        "message": message,
        "problems": problems,
        "blocked": [{"reason": code, "message": text} for code, text in blocked],
        "pii_fields": pii_fields,
    }
