"""Shared pieces of the journey engine tests: a recording channel, journeys, people, time."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from cdp.actors import SYSTEM
from cdp.consent import record_consent
from cdp.db import db, utcnow
from cdp.ingest.pipeline import ingest
from cdp.ingest.tasks import process_batch
from cdp.models import Identity
from journeys.channels import Channel, Sent, TransientError
from journeys.engine import delivery, runner
from journeys.models import Delivery, Journey, JourneyInstance, JourneyVersion
from journeys.tasks import claim_due
from tests.test_content import approved, sms_fields

SHANGHAI = ZoneInfo("Asia/Shanghai")
REFILL_SMS = "【康护】您的{{ context.name }}预计{{ context.run_out_date }}用完，请及时续方。"
PLAIN_SMS = "【康护】您的预约已确认，请按时到店。"
PROMO_SMS = "【康护】会员日满100减20。回T退订"


class RecordingSms(Channel):
    """Stands in for the SMS gateway: records each call; can be told to fail."""

    name = "sms"
    idempotent = False
    calls: list = []
    fail_with: Exception | None = None

    def send(self, out):
        type(self).calls.append(out)
        if type(self).fail_with is not None:
            raise type(self).fail_with
        return Sent(provider_id=f"biz-{len(type(self).calls)}", account="test", response={})


class IdempotentSms(RecordingSms):
    idempotent = True


def local(day: str, hm: str) -> datetime:
    """A moment in Shanghai local time, as the engine's UTC datetimes."""
    return (
        datetime.fromisoformat(f"{day}T{hm}:00")
        .replace(tzinfo=SHANGHAI)
        .astimezone(utcnow().tzinfo)
    )


def sms_content(team, text=REFILL_SMS, category="service") -> int:
    version = approved(team, name=f"短信 {category}", **sms_fields(text=text, category=category))
    return version.item_id, version.id


def publish(definition: dict, name: str = "旅程", test_profiles: list[int] | None = None):
    """A published journey (the engine's view; the lifecycle service is tested elsewhere)."""
    journey = Journey(name=name, status="published", draft=definition, live_version=1)
    if test_profiles is not None:
        journey.test_mode, journey.test_profile_ids = True, test_profiles
    db.session.add(journey)
    db.session.flush()
    version = JourneyVersion(journey_id=journey.id, number=1, definition=definition)
    db.session.add(version)
    db.session.commit()
    return journey


def track(source, user_id: str, event: str, at: datetime | None = None, **properties):
    message = {"type": "track", "userId": user_id, "event": event, "properties": properties}
    if at is not None:
        message["timestamp"] = at.isoformat()
    result = ingest(source, [message])
    process_batch(result.outbox_id)
    return result


def person(source, user_id: str, **traits) -> int:
    result = ingest(source, [{"type": "identify", "userId": user_id, "traits": traits}])
    process_batch(result.outbox_id)
    return profile_of(user_id)


def profile_of(user_id: str) -> int:
    return db.session.scalar(
        sa.select(Identity.profile_id).where(
            Identity.type == "user_id", Identity.value_index == user_id
        )
    )


def grant(profile_id: int, purpose: str = "marketing", channel: str = "sms") -> None:
    record_consent(SYSTEM, profile_id, purpose, channel, "granted")
    db.session.commit()


def instances(journey_id: int) -> list[JourneyInstance]:
    db.session.expire_all()
    return list(
        db.session.scalars(
            sa.select(JourneyInstance)
            .where(JourneyInstance.journey_id == journey_id)
            .order_by(JourneyInstance.id)
        )
    )


def deliveries(**filters) -> list[Delivery]:
    db.session.expire_all()
    query = sa.select(Delivery).order_by(Delivery.id)
    for key, value in filters.items():
        query = query.where(getattr(Delivery, key) == value)
    return list(db.session.scalars(query))


def run(now: datetime | None = None) -> dict:
    """One sweep's worth of work, done inline: advance what is due, perform deliveries."""
    now = now or utcnow()
    result = runner.advance(claim_due(now), now=now)
    pending = [d.id for d in deliveries(status="pending")]
    return {**result, "performed": delivery.perform(pending, now)}


def later(**delta) -> datetime:
    return utcnow() + timedelta(**delta)


__all__ = ["TransientError", "SYSTEM"]
