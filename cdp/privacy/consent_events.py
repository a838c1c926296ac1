"""Consent from channel events: unsubscribes, SMS opt-out replies, subscribe accepts/refusals,
and ``consents`` traits, applied once per event (an event processor of the outbox).

| event | effect |
|---|---|
| ``unsubscribe`` (WeChat OA) | marketing withdrawn on wechat (``properties.channel`` or the
  source's kind when that is a channel) |
| ``sms_reply`` with ``properties.text`` T / TD / 退订 | marketing withdrawn on sms |
| ``subscribe_refused`` (mini-program, OA) | marketing withdrawn on miniprogram (or the source's
  channel); the template's credits set to 0 |
| ``subscribe_accepted`` | +1 subscribe credit per ``template_id(s)``; ``results`` map too |
| ``consents: {...}`` in identify traits or event properties | grant/withdraw per key |

In ``consents``, a channel key (``sms``) means marketing on that channel, a purpose key
(``health_data``) that purpose on every channel; a dict value maps channels of a purpose.
"""

from __future__ import annotations

import re

import sqlalchemy as sa

from cdp.actors import Actor
from cdp.consent import PURPOSES, current_consents, record_consent
from cdp.content.credits import add_credits, zero_credits
from cdp.db import db
from cdp.ingest.tasks import register_event_processor
from cdp.models import Event, Source
from cdp.models.consent import CHANNELS
from cdp.models.privacy import ConsentEventMark
from cdp.profiles import live_profile_id

ACTOR = Actor(kind="system", role="admin", request_id="consent-events")
UNSUBSCRIBE = "unsubscribe"
SMS_REPLY = "sms_reply"
SUBSCRIBE_ACCEPTED = "subscribe_accepted"
SUBSCRIBE_REFUSED = "subscribe_refused"
CONSENT_EVENTS = ("consent_granted", "consent_withdrawn", "consents_updated")
NAMES = (UNSUBSCRIBE, SMS_REPLY, SUBSCRIBE_ACCEPTED, SUBSCRIBE_REFUSED, *CONSENT_EVENTS)
SMS_OPT_OUT = frozenset({"T", "TD", "退订"})
SEND_CHANNELS = tuple(c for c in CHANNELS if c != "*")
_CHUNK = 500


def _template_ids(properties: dict) -> list[str]:
    ids = properties.get("template_ids") or []
    if isinstance(properties.get("template_id"), str):
        ids = [properties["template_id"], *ids]
    return [str(i)[:128] for i in ids if isinstance(i, str | int) and str(i)]


def consent_changes(consents) -> list[tuple[str, str, str]]:
    """(purpose, channel, status) for a ``consents`` mapping; unknown keys are ignored."""
    changes = []
    if not isinstance(consents, dict):
        return changes
    for key, value in consents.items():
        if isinstance(value, bool):
            status = "granted" if value else "withdrawn"
            if key in SEND_CHANNELS:
                changes.append(("marketing", key, status))
            elif key in PURPOSES:
                changes.append((key, "*", status))
        elif isinstance(value, dict) and key in PURPOSES:
            for channel, flag in value.items():
                if channel in CHANNELS and isinstance(flag, bool):
                    changes.append((key, channel, "granted" if flag else "withdrawn"))
    return changes


def _sms_opt_out(text) -> bool:
    return re.sub(r"[\s\W_]+", "", str(text or "")).upper() in SMS_OPT_OUT


def _channel(props: dict, source_kind: str | None, default: str) -> str:
    """The channel an event speaks for: ``properties.channel``, else its source's kind."""
    for candidate in (props.get("channel"), source_kind):
        if candidate in SEND_CHANNELS:
            return candidate
    return default


def effects_of(
    event: Event, source_kind: str | None = None
) -> tuple[list[tuple[str, str, str]], list[str], list[str]]:
    """(consent changes, templates to credit, templates to zero) of one event."""
    props = event.properties or {}
    changes: list[tuple[str, str, str]] = []
    credit: list[str] = []
    zero: list[str] = []
    if event.name == UNSUBSCRIBE:
        changes.append(("marketing", _channel(props, source_kind, "wechat"), "withdrawn"))
    elif event.name == SMS_REPLY and _sms_opt_out(props.get("text")):
        changes.append(("marketing", "sms", "withdrawn"))
    elif event.name == SUBSCRIBE_REFUSED:
        changes.append(("marketing", _channel(props, source_kind, "miniprogram"), "withdrawn"))
        zero += _template_ids(props)
    elif event.name == SUBSCRIBE_ACCEPTED:
        credit += _template_ids(props)
    if isinstance(props.get("results"), dict):  # wx.requestSubscribeMessage's answer per template
        for template_id, answer in props["results"].items():
            (credit if answer == "accept" else zero).append(str(template_id)[:128])
    changes += consent_changes(props.get("consents"))
    changes += consent_changes((props.get("traits") or {}).get("consents"))
    return changes, credit, zero


def _apply(event: Event, profile_id: int, source_kind: str | None) -> bool:
    changes, credit, zero = effects_of(event, source_kind)
    current = current_consents(profile_id) if changes else {}
    evidence = {"event": event.name or event.type, "message_id": event.message_id}
    evidence["event_id"] = event.id
    for purpose, channel, status in changes:
        if current.get((purpose, channel)) == status:
            continue  # a repeated answer adds no information
        record_consent(
            ACTOR,
            profile_id,
            purpose,
            channel,
            status,
            at=event.timestamp,
            source_id=event.source_id,
            evidence=evidence,
        )
        current[(purpose, channel)] = status
    if credit:
        add_credits(profile_id, credit)
    if zero:
        zero_credits(profile_id, zero)
    return bool(changes or credit or zero)


def _has_key(*path: str):
    """SQL: the event's properties hold a value at ``path`` (JSON on SQLite, JSONB on PG)."""
    if db.session.get_bind().dialect.name == "sqlite":
        return sa.func.json_extract(Event.properties, "$." + ".".join(path)).is_not(None)
    return Event.properties[path if len(path) > 1 else path[0]].is_not(None)


def process_consent_events(event_ids: list[int], profile_ids: list[int]) -> int:
    """Apply the consent effects of a batch's events, each event once; return how many."""
    applied = 0
    kinds = dict(db.session.execute(sa.select(Source.id, Source.kind)).tuples().all())
    for start in range(0, len(event_ids), _CHUNK):
        chunk = event_ids[start : start + _CHUNK]
        events = db.session.scalars(
            sa.select(Event)
            .where(
                Event.id.in_(chunk),
                Event.id.not_in(sa.select(ConsentEventMark.event_id)),
                sa.or_(
                    Event.name.in_(NAMES),
                    _has_key("consents"),
                    _has_key("results"),
                    _has_key("traits", "consents"),
                ),
            )
            .order_by(Event.timestamp, Event.id)
        )
        for event in events:
            if event.profile_id is None:
                continue
            profile_id = live_profile_id(event.profile_id)
            if profile_id is not None and _apply(event, profile_id, kinds.get(event.source_id)):
                db.session.add(ConsentEventMark(event_id=event.id))
                applied += 1
    db.session.flush()
    return applied


def init_app(app) -> None:
    register_event_processor("privacy-consent", process_consent_events)
