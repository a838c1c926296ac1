"""Send guards: the rules every message must pass at journey validation AND at send time.

The journey engine calls:

- ``check_journey_content(version, audience_kind, channel=None, at=None, context_keys=None)``
  when a journey is validated or published: raises ``SendBlocked`` with the first problem
  (``journey_content_problems`` lists them all).
- ``check_sendable(version, profile, channel, at)`` just before a send: raises
  ``SendBlocked(reason)``; ``send_problems`` lists every reason.
- ``prepare_send(version, profile, channel, at, context)``: ``check_sendable``, then render,
  check the rendered fields against the channel's rules and consume the mini-program
  subscribe credit, in the caller's transaction. Returns the message for the adapter.

``version`` and ``profile`` may be given as objects or ids. Reasons are stable codes
(``REASONS``), so the engine can count and report them.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from cdp.consent import has_consent, has_refused
from cdp.content.credits import consume_credit, credits_of
from cdp.content.library import content_hash, get_item, get_version, local_date
from cdp.content.rendering import RenderError, profile_values, render_body
from cdp.content.schemas import KIND_CHANNELS, rendered_field_problems, sms_problems
from cdp.db import db, utcnow
from cdp.exceptions import CdpError
from cdp.models import Identity, Profile
from cdp.models.content import ContentItem, ContentVersion
from cdp.privacy.minors import marketing_blocked_as_minor
from cdp.profiles import profile_family

REASONS = {
    "not_approved": "the version is not approved",
    "withdrawn": "the version was withdrawn",
    "expired": "the version has expired",
    "changed_after_approval": "the version changed after it was approved",
    "wrong_channel": "this kind of content cannot be sent on this channel",
    "marketing_on_service_channel": "WeChat template messages carry service notices only",
    "sms_rules": "the SMS lacks the sender signature or the opt-out instruction",
    "no_such_profile": "no such profile",
    "profile_merged": "the profile was merged into another; send to that one",
    "rx_to_patient": "prescription (Rx) content never goes to patients",
    "rx_unverified_hcp": "prescription (Rx) content needs a verified doctor (licence number)",
    "audience_mismatch": "the content is not meant for this kind of profile",
    "automated_marketing_refused": "the person refused automated marketing (PIPL Art. 24)",
    "minor_without_guardian_consent": "under 14 without guardian consent: no marketing",
    "no_marketing_consent": "no marketing consent on this channel",
    "no_subscribe_credit": "no mini-program subscribe credit for this template",
    "missing_variable": "the journey does not provide a variable the content uses",
    "render_failed": "the content could not be rendered for this profile",
    "field_rules": "a rendered field breaks the channel's length or format rules",
}


class SendBlocked(CdpError):
    status = 409

    def __init__(self, reason: str, message: str | None = None):
        super().__init__(message or REASONS.get(reason, reason), "content")
        self.reason = reason


def _version(version) -> ContentVersion:
    return version if isinstance(version, ContentVersion) else get_version(int(version))


def _profile(profile) -> Profile | None:
    return profile if isinstance(profile, Profile) else db.session.get(Profile, int(profile))


def version_problems(
    version: ContentVersion, item: ContentItem, channel: str | None, at: datetime
) -> list[tuple[str, str]]:
    """Problems of the version itself, whoever receives it."""
    problems = []
    status = version.status
    if status != "approved":
        reason = status if status in ("withdrawn", "expired") else "not_approved"
        problems.append((reason, REASONS[reason]))
    elif version.approved_hash != content_hash(version, item.kind):
        problems.append(("changed_after_approval", REASONS["changed_after_approval"]))
    if status == "approved" and (version.expires_on is None or local_date(at) > version.expires_on):
        problems.append(("expired", REASONS["expired"]))
    if channel is not None and channel not in KIND_CHANNELS.get(item.kind, ()):
        problems.append(("wrong_channel", f"{item.kind} content cannot be sent by {channel}"))
    if item.kind == "wechat_template" and version.category == "marketing":
        problems.append(("marketing_on_service_channel", REASONS["marketing_on_service_channel"]))
    if item.kind == "sms":
        for _, message in sms_problems((version.body or {}).get("text") or "", version.category):
            problems.append(("sms_rules", message))
    return problems


def audience_problems(version: ContentVersion, kind: str) -> list[tuple[str, str]]:
    """Rx never to patients; the version's audience must include the profile kind."""
    problems = []
    if version.product_class == "rx" and kind != "hcp":
        problems.append(("rx_to_patient", REASONS["rx_to_patient"]))
    if version.audience not in ("both", kind) and not problems:
        problems.append(("audience_mismatch", REASONS["audience_mismatch"]))
    return problems


def _verified_hcp(profile: Profile) -> bool:
    return (
        db.session.scalar(
            sa.select(Identity.id)
            .where(
                Identity.profile_id.in_(profile_family(profile.id)),
                Identity.type == "hcp_license",
            )
            .limit(1)
        )
        is not None
    )


def profile_problems(
    version: ContentVersion, item: ContentItem, profile: Profile | None, channel: str, at
) -> list[tuple[str, str]]:
    """Problems of sending this version to this person on this channel at this time."""
    if profile is None:
        return [("no_such_profile", REASONS["no_such_profile"])]
    if profile.merged_into_id is not None:
        return [("profile_merged", REASONS["profile_merged"])]
    problems = audience_problems(version, profile.kind)
    if version.product_class == "rx" and profile.kind == "hcp" and not _verified_hcp(profile):
        problems.append(("rx_unverified_hcp", REASONS["rx_unverified_hcp"]))
    if version.category == "marketing":
        if has_refused(profile.id, "automated_marketing", channel):
            problems.append(("automated_marketing_refused", REASONS["automated_marketing_refused"]))
        if marketing_blocked_as_minor(profile, at):
            problems.append(
                ("minor_without_guardian_consent", REASONS["minor_without_guardian_consent"])
            )
        if not has_consent(profile.id, "marketing", channel):
            problems.append(("no_marketing_consent", REASONS["no_marketing_consent"]))
    if item.kind == "miniprogram_subscribe":
        template_id = (version.body or {}).get("template_id") or ""
        if credits_of(profile.id, template_id) < 1:
            problems.append(("no_subscribe_credit", REASONS["no_subscribe_credit"]))
    return problems


def send_problems(version, profile, channel: str, at: datetime) -> list[tuple[str, str]]:
    """Every reason (code, message) the send would be refused; empty when it may go."""
    version = _version(version)
    item = get_item(version.item_id)
    problems = version_problems(version, item, channel, at)
    return problems + profile_problems(version, item, _profile(profile), channel, at)


def check_sendable(version, profile, channel: str, at: datetime) -> None:
    """Raise ``SendBlocked`` unless the version may be sent to the profile now."""
    problems = send_problems(version, profile, channel, at)
    if problems:
        raise SendBlocked(*problems[0])


def prepare_send(version, profile, channel: str, at: datetime, context: dict | None = None):
    """Check, render and (for subscribe messages) consume a credit; return the message."""
    version = _version(version)
    profile = _profile(profile)
    check_sendable(version, profile, channel, at)
    item = get_item(version.item_id)
    try:
        message = render_body(
            item.kind,
            version.body or {},
            profile_values(profile, version.variables or []),
            dict(context or {}),
        )
    except RenderError as exc:
        raise SendBlocked("render_failed", exc.message) from None
    fields = {k: v["value"] for k, v in (message.get("data") or {}).items()}
    problems = rendered_field_problems(item.kind, fields)
    if problems:
        raise SendBlocked("field_rules", f"{problems[0][0]}: {problems[0][1]}")
    if item.kind == "sms":
        problems = sms_problems(message["text"] or "", version.category)
        if problems:
            raise SendBlocked("sms_rules", problems[0][1])
    if item.kind == "miniprogram_subscribe" and not consume_credit(
        profile.id, version.body.get("template_id") or ""
    ):
        raise SendBlocked("no_subscribe_credit")
    return message


def journey_content_problems(
    version,
    audience_kind: str | None,
    channel: str | None = None,
    at: datetime | None = None,
    context_keys: set[str] | None = None,
) -> list[tuple[str, str]]:
    """Problems of using a version in a journey whose audience is ``patient``, ``hcp`` or
    mixed (``both``/None), on ``channel``, with the journey context keys it provides."""
    version = _version(version)
    item = get_item(version.item_id)
    problems = version_problems(version, item, channel, at or utcnow())
    kinds = ("patient", "hcp") if audience_kind not in ("patient", "hcp") else (audience_kind,)
    for kind in kinds:
        for problem in audience_problems(version, kind):
            if problem not in problems:
                problems.append(problem)
    if context_keys is not None:
        for variable in version.variables or []:
            scope, _, name = variable.partition(".")
            if scope == "context" and name not in context_keys:
                problems.append(("missing_variable", f"the journey does not provide {variable}"))
    return problems


def check_journey_content(
    version,
    audience_kind: str | None,
    channel: str | None = None,
    at: datetime | None = None,
    context_keys: set[str] | None = None,
) -> None:
    """Raise ``SendBlocked`` if a journey may not use this version (validation time)."""
    problems = journey_content_problems(version, audience_kind, channel, at, context_keys)
    if problems:
        raise SendBlocked(*problems[0])
