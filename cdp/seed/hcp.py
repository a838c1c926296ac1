"""Demo doctor engagement (``cdp hcp seed-demo``): reps, master data, meetings, quizzes, points.

Runs on the doctors of ``cdp seed-demo`` through the module's own operations: the demo manager
gives the doctors to two demo reps, who attest most of them (the ones the generator marked
verified); the demo marketer writes each meeting's course material and the demo reviewer
approves it; reps ask for invitations and the manager decides. What the doctors do
(registering, joining and leaving the live stream, answering the quiz) arrives as events of the
live-stream platform's source and goes through the ingest pipeline, so the processor computes
minutes, scores, knowledge and academic points (within the annual cap) as it does for real ones.
"""

from __future__ import annotations

import secrets
from collections import defaultdict
from datetime import datetime, time, timedelta
from random import Random

import sqlalchemy as sa

from cdp import audit
from cdp.actors import Actor
from cdp.auth.accounts import find_user
from cdp.auth.permissions import require
from cdp.content import operations as content_ops
from cdp.content.library import local_date
from cdp.db import db, transaction, utcnow
from cdp.exceptions import Conflict
from cdp.hcp import academic, doctors, events, meetings, quizzes
from cdp.ingest.pipeline import ingest
from cdp.ingest.tasks import process_batch, process_pending
from cdp.loyalty import ledger
from cdp.models import Event, Identity, Profile, Source
from cdp.models.content import ContentItem, ContentVersion
from cdp.models.hcp import TITLES, Award, Meeting, Participant
from cdp.pii import vault
from cdp.profiles import decrypt_profile_pii
from cdp.seed import vocab
from cdp.seed.hcp_vocab import (
    CATALOGUE,
    CITY_TIERS,
    NORTH,
    PAST,
    QUIZZES,
    UPCOMING,
    DemoMeeting,
)

LIVE_SOURCE_ID = "src_demo_hcp_live"
LIVE_SOURCE_NAME = "医生学术直播平台（直播回调）"


def _team() -> dict[str, list[Actor]]:
    """role -> the demo users of it (made by ``cdp seed-demo``)."""
    team: dict[str, list[Actor]] = defaultdict(list)
    for email, role, _name in vocab.DEMO_USERS:
        user = find_user(email)
        if user is None:
            raise Conflict(f"demo user {email} is missing: run `cdp seed-demo` first", "users")
        team[role].append(Actor(kind="user", user_id=user.id, role=role))
    return team


def _live_source(actor: Actor) -> Source:
    """The live-stream platform's source (a ``livestream`` webhook source; its signing secret
    is random: the demo ingests the platform's events directly)."""
    source = db.session.get(Source, LIVE_SOURCE_ID)
    if source is None:
        with transaction() as session:
            options = {"secret": secrets.token_urlsafe(24), "platform": "demo"}
            blob = vault().encrypt_json(options, LIVE_SOURCE_ID.encode())
            source = Source(id=LIVE_SOURCE_ID, name=LIVE_SOURCE_NAME, kind="livestream",
                            options_encrypted=blob, default_profile_kind="hcp",
                            created_by_id=actor.user_id)  # fmt: skip
            session.add(source)
            session.flush()
            audit.record(
                actor, "source.create", "source", LIVE_SOURCE_ID, kind="livestream", demo=True
            )
    return source


def _doctors() -> list[tuple[int, dict, str]]:
    """(profile id, traits, licence number) of the live demo doctors, in id order."""
    licence = sa.and_(Identity.profile_id == Profile.id, Identity.type == "hcp_license")
    rows = db.session.execute(
        sa.select(Profile.id, Profile.traits, Identity.value_index)
        .join(Identity, licence)
        .where(Profile.kind == "hcp", Profile.merged_into_id.is_(None))
        .order_by(Profile.id)
    )
    return [(pid, traits or {}, number) for pid, traits, number in rows]


def _master_data(team, rng: Random, people) -> dict[int, Actor | None]:
    """Reps for nine in ten doctors, their master data, the generator's verified ones attested."""
    manager, (north, south) = team["manager"][0], team["rep"][:2]
    owners = {}
    for pid, traits, _licence in people:
        rep = None
        if rng.random() < 0.9:
            rep = north if traits.get("city") in NORTH else south
            doctors.assign_rep(manager, pid, rep.user_id)
        title = traits.get("title") if traits.get("title") in TITLES else None
        role = "none"
        if title in ("主任医师", "副主任医师"):
            weights = (50, 30, 15, 5) if title == "主任医师" else (85, 15, 0, 0)
            role = rng.choices(("none", "city", "provincial", "national"), weights)[0]
        doctors.update_doctor(manager, pid, hospital=traits.get("hospital", ""),
                              department=traits.get("department", ""), title=title,
                              city_tier=CITY_TIERS.get(traits.get("city_tier")),
                              society_role=role)  # fmt: skip
        if traits.get("verification") == "verified":
            doctors.verify(rep or manager, pid, "rep" if rep else "licence_check")
        owners[pid] = rep
    return owners


def _material(marketer: Actor, reviewer: Actor, spec: DemoMeeting, now: datetime) -> int:
    """The approved version of the meeting's course material (written and approved if none)."""
    name = f"会议课件：{spec.topic}"
    found = db.session.scalar(
        sa.select(ContentVersion.id)
        .join(ContentItem, ContentItem.id == ContentVersion.item_id)
        .where(ContentItem.name == name, ContentVersion.status == "approved")
        .where(ContentVersion.expires_on > local_date(now))
        .order_by(ContentVersion.id.desc())
        .limit(1)
    )
    if found is not None:
        return found
    body = {"title": spec.topic, "summary": f"{spec.area}学术会议课件（{spec.product}）",
            "html": f"<h2>{spec.topic}</h2><p>本课件供医疗卫生专业人士学习参考。</p>"}  # fmt: skip
    version = content_ops.create_item(
        marketer, name, "article", body=body, audience="hcp", product_class="rx",
        products=[spec.product], category="marketing", therapeutic_area=spec.area,
        expires_on=local_date(now) + timedelta(days=365),
    )  # fmt: skip
    content_ops.submit(marketer, version.id, "学术会议课件，请审核")
    code = f"MLR-HCP-DEMO-{now:%Y}-{version.item_id:03d}"
    content_ops.approve(reviewer, version.id, "演示数据：已审核", approval_code=code)
    return version.id


def _speaker(spec: DemoMeeting, people) -> tuple[int | None, str]:
    """A chief physician of the meeting's first department, with their name."""
    for pid, traits, _licence in people:
        if traits.get("title") == "主任医师" and traits.get("department") == spec.departments[0]:
            profile = db.session.get(Profile, pid)
            name = decrypt_profile_pii(profile.pii_encrypted).get("name", "")
            return pid, f"{name}（{traits.get('hospital', '')}）"[:120]
    return None, "特邀专家"


def _plan(team, spec: DemoMeeting, now: datetime, people, open_ended: bool) -> Meeting:
    marketer, reviewer = team["marketer"][0], team["reviewer"][0]
    day = now.astimezone(vocab.CST).date() + timedelta(days=spec.day)
    starts = datetime.combine(day, time.fromisoformat(spec.at), vocab.CST)
    speaker_id, speaker = _speaker(spec, people)
    data = {"topic": spec.topic, "kind": spec.kind, "product": spec.product,
            "therapeutic_area": spec.area, "campaign": spec.campaign.format(year=starts.year),
            "speaker_name": speaker, "speaker_profile_id": speaker_id, "starts_at": starts,
            # A meeting over takes no invitations: a past one is closed after them.
            "ends_at": None if open_ended else starts + timedelta(minutes=spec.minutes),
            "content_version_id": _material(marketer, reviewer, spec, now),
            "min_minutes": spec.min_minutes}  # fmt: skip
    meeting = meetings.create_meeting(marketer, data)
    quizzes.set_quiz(marketer, meeting.id, QUIZZES[spec.quiz])
    return meeting


def upcoming_meeting(now: datetime, after: datetime) -> Meeting:
    """The upcoming demo meeting (demo journey #4 invites to it), starting after ``after``:
    found by topic, else planned like ``cdp hcp seed-demo`` does."""
    found = db.session.scalar(
        sa.select(Meeting)
        .where(Meeting.topic == UPCOMING.topic, Meeting.status == "scheduled")
        .where(Meeting.starts_at > after)
        .order_by(Meeting.starts_at)
        .limit(1)
    )
    return found or _plan(_team(), UPCOMING, now, _doctors(), open_ended=False)


def seeded() -> bool:
    """Whether the demo meetings were held already (``cdp hcp seed-demo`` ran)."""
    topics = [spec.topic for spec in PAST]
    return (
        db.session.scalar(sa.select(Meeting.id).where(Meeting.topic.in_(topics)).limit(1))
        is not None
    )


def _invite(team, owners, meeting: Meeting, invitees, rng: Random, past: bool) -> None:
    """Reps ask for their doctors, the manager decides (a past meeting's all, an upcoming
    one's partly: the rest wait in the queue); the manager invites unowned doctors."""
    manager = team["manager"][0]
    by_rep: dict[Actor | None, list[int]] = defaultdict(list)
    for pid in invitees:
        by_rep[owners.get(pid)].append(pid)
    for rep, ids in by_rep.items():
        if rep is None:
            meetings.request_invitations(manager, meeting.id, ids, "经理直接邀请")
            continue
        for row in meetings.request_invitations(rep, meeting.id, ids, "我负责的医生，建议邀请"):
            r = rng.random()
            if r < (0.9 if past else 0.6):
                meetings.decide(manager, row.id, True)
            elif past or r < 0.65:
                meetings.decide(manager, row.id, False, "本场名额已满")


def _backdate(meeting: Meeting, rng: Random, now: datetime) -> None:
    """The operations stamp now; the demo's requests were made the week before the meeting."""
    with transaction():
        rows = db.session.scalars(
            sa.select(Participant).where(Participant.meeting_id == meeting.id)
        )
        for row in rows:
            asked = min(meeting.starts_at - timedelta(days=rng.uniform(6, 10)),
                        now - timedelta(hours=rng.uniform(3, 72)))  # fmt: skip
            decided = min(asked + timedelta(hours=rng.uniform(2, 30)), now)
            row.requested_at = asked if row.requested_at else None
            row.decided_at = decided if row.decided_at else None
            if row.invited_at is not None:
                row.invited_at = decided if row.decided_at else asked
                db.session.execute(
                    sa.update(Event)
                    .where(Event.source_id == events.HCP_SOURCE_ID,
                           Event.message_id == f"invited:{meeting.id}:{row.profile_id}")
                    .values(timestamp=row.invited_at)
                )  # fmt: skip
            row.updated_at = max(t for t in (asked, row.decided_at) if t)


class _Doctors:
    """What the doctors do, as the live-stream platform's messages; knowledge drawn per doctor."""

    def __init__(self, rng: Random, licences: dict[int, str]):
        self.rng, self.licences = rng, licences
        self.ability: dict[int, dict[str, float]] = {}
        self.messages: list[dict] = []

    def send(self, pid: int, event: str, at: datetime, n: int, **props) -> None:
        self.messages.append({
            "type": "track", "event": event, "timestamp": at.isoformat(), "properties": props,
            "messageId": f"demo-hcp:{props['meeting_id']}:{pid}:{event}:{n}",
            "context": {"externalIds": [{"type": "hcp_license", "id": self.licences[pid]}]},
        })  # fmt: skip

    def answers(self, pid: int, quiz: list[dict]) -> dict:
        rng = self.rng
        if pid not in self.ability:  # product usage is where doctors know least
            self.ability[pid] = {d: rng.uniform(0.35, 0.95) for d in ("diagnosis", "treatment",
                                 "drug_class_choice", "brand_choice")}  # fmt: skip
            self.ability[pid]["product_usage"] = rng.uniform(0.15, 0.85)
        known = self.ability[pid]
        given = {}
        for q in quiz:
            p = sum(known[d] for d in q["dimensions"]) / len(q["dimensions"])
            wrong = [i for i in range(len(q["options"])) if i not in q["answer"]]
            given[q["id"]] = q["answer"] if rng.random() < p else [rng.choice(wrong)]
        for dimension in known:  # the course taught them something
            known[dimension] = min(known[dimension] + 0.2, 0.98)
        return given

    def register(self, meeting: Meeting, pid: int, invited_at: datetime, now: datetime) -> None:
        at = min(invited_at + timedelta(hours=self.rng.uniform(1, 20)), now - timedelta(minutes=1))
        self.send(pid, events.REGISTERED, at, 0, meeting_id=meeting.id)

    def attend(self, meeting: Meeting, spec: DemoMeeting, pid: int, invited_at) -> None:
        rng, starts, m = self.rng, meeting.starts_at, meeting.id
        ends = starts + timedelta(minutes=spec.minutes)
        registered = invited_at is None or rng.random() < 0.75  # walk-ins register
        if registered:
            at = starts - timedelta(hours=rng.uniform(1, 72))
            self.send(pid, events.REGISTERED, max(at, invited_at or at), 0, meeting_id=m)
        if rng.random() >= (0.85 if registered else 0.1):
            return
        joined = starts + timedelta(minutes=rng.uniform(-5, 15))
        stay = rng.uniform(spec.min_minutes + 5, spec.minutes + 10)
        if rng.random() < 0.3:  # left early: no points
            stay = rng.uniform(5, spec.min_minutes - 1)
        left = min(joined + timedelta(minutes=stay), ends + timedelta(minutes=5))
        self.send(pid, events.JOINED, joined, 0, meeting_id=m)
        if rng.random() < 0.15:  # the connection dropped, they came back
            gap = joined + (left - joined) / 2
            self.send(pid, events.LEFT, gap, 0, meeting_id=m)
            self.send(pid, events.JOINED, gap + timedelta(minutes=2), 1, meeting_id=m)
        self.send(pid, events.LEFT, left, 1, meeting_id=m)
        if (left - joined) >= timedelta(minutes=15) and rng.random() < 0.85:
            at = left + timedelta(minutes=rng.uniform(1, 60))
            answers = self.answers(pid, meeting.quiz)
            self.send(pid, events.QUIZ_SUBMITTED, at, 0, meeting_id=m, answers=answers)


def _deliver(source: Source, messages: list[dict]) -> int:
    """Ingest the platform's messages and process them now, as its webhook would be."""
    result = ingest(source, messages)
    if result.rejected:
        raise Conflict(f"demo events rejected: {result.rejected[0]}", "events")
    if result.outbox_id is not None:
        process_batch(result.outbox_id)
    return result.accepted


def _catalogue(team, owners) -> int:
    """Academic items proposed by the marketer, most approved by the manager; a few spent."""
    marketer, manager = team["marketer"][0], team["manager"][0]
    items = {}
    for code, name, kind, points, approve in CATALOGUE:
        item = academic.create_item(marketer, code, name, kind, points)
        if approve:
            academic.set_item_status(manager, item.id, "approved")
        items[code] = item.id
    redeemed = 0
    rows = db.session.execute(
        sa.select(Award.profile_id)
        .where(Award.status == "awarded")
        .distinct()
        .order_by(Award.profile_id)
    )
    for (pid,) in rows.all():
        if redeemed == 3:
            break
        if ledger.balance(pid) >= CATALOGUE[0][3]:
            actor = owners.get(pid) or manager
            academic.redeem(actor, pid, items[CATALOGUE[0][0]], f"demo-redeem-{pid}")
            redeemed += 1
    return redeemed


def seed_hcp(actor: Actor, seed: int = 11, now: datetime | None = None) -> dict:
    """Master data, meetings with invitations, attendance and quizzes, points; returns counts.

    :raise Conflict: the demo users or doctors are missing (run ``cdp seed-demo`` first), or
        the demo meetings exist already.
    """
    require(actor, "hcp:approve")
    require(actor, "sources:edit")
    now, rng = now or utcnow(), Random(seed)
    team, people = _team(), _doctors()
    if not people:
        raise Conflict("no demo doctors: run `cdp seed-demo` first", "doctors")
    if seeded():
        raise Conflict("the demo meetings exist already", "meetings")
    owners = _master_data(team, rng, people)
    source = _live_source(actor)
    by_department = defaultdict(list)
    for pid, traits, _licence in people:
        by_department[traits.get("department")].append(pid)
    crowd = _Doctors(rng, {pid: licence for pid, _traits, licence in people})
    accepted, asked = 0, {}
    for spec in (*PAST, UPCOMING):
        if spec.day < 0:
            meeting = _plan(team, spec, now, people, open_ended=True)
        else:  # `cdp journeys seed-demo` may have planned it already
            meeting = upcoming_meeting(now, after=now)
        pool = [pid for d in spec.departments for pid in by_department[d]]
        # A campaign's later meetings go to the doctors of its first: the follow-up course.
        invitees = asked.get(spec.campaign) or sorted(rng.sample(pool, min(spec.invite, len(pool))))
        asked.setdefault(spec.campaign, invitees)
        _invite(team, owners, meeting, invitees, rng, past=spec.day < 0)
        if spec.day < 0:
            ends = meeting.starts_at + timedelta(minutes=spec.minutes)
            meetings.update_meeting(team["marketer"][0], meeting.id, {"ends_at": ends})
        _backdate(meeting, rng, now)
        invited = dict(db.session.execute(
            sa.select(Participant.profile_id, Participant.invited_at)
            .where(Participant.meeting_id == meeting.id, Participant.invitation == "invited")
        ).tuples().all())  # fmt: skip
        if spec.day >= 0:  # the upcoming one: half of the invited registered so far
            for pid in sorted(invited):
                if rng.random() < 0.5:
                    crowd.register(meeting, pid, invited[pid], now)
        else:
            walk_ins = [pid for pid in pool if pid not in invitees and rng.random() < 0.05]
            for pid in (*sorted(invited), *walk_ins):
                crowd.attend(meeting, spec, pid, invited.get(pid))
        accepted += _deliver(source, crowd.messages)
        crowd.messages = []
    redeemed = _catalogue(team, owners)
    doctors.recompute_tiers(team["manager"][0])  # talks given and meetings completed count
    process_pending()  # the module's own events (invited, completed, points) reach segments
    awards = dict(db.session.execute(
        sa.select(Award.status, sa.func.count()).group_by(Award.status)).tuples().all())  # fmt: skip
    return {"doctors": len(people), "verified": sum(1 for _p, t, _l in people
            if t.get("verification") == "verified"), "meetings": len(PAST) + 1,
            "events": accepted, "awarded": awards.get("awarded", 0),
            "refused": awards.get("refused", 0), "redeemed": redeemed}  # fmt: skip
