"""Journey lifecycle: drafts, immutable versions, migration of live instances, archive, test mode,
dry runs, and the stats computed from instances, the step log and the outbox."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from cdp.actors import SYSTEM, Actor
from cdp.consent import record_consent
from cdp.db import db, utcnow
from cdp.exceptions import Conflict, NotFound, PermissionDenied, ValidationFailed
from cdp.models import AuditEntry, Profile
from journeys import dry_run, service
from journeys.control import in_global_control
from journeys.models import Delivery, JourneyInstance, JourneyStepLog, JourneyVersion
from journeys.stats import deliveries, journey_stats
from journeys.validation import InvalidDefinition
from segments.models import SegmentMembership
from tests.conftest import make_app, make_user
from tests.conftest import migrate as migrate_database
from tests.test_journeys_validation import World, refill, step


@pytest.fixture
def world(app_ctx):
    return World(app_ctx)


@pytest.fixture
def marketer(world):
    return world.team.marketer


def profiles(n: int, kind: str = "patient") -> list[int]:
    rows = [Profile(kind=kind) for _ in range(n)]
    db.session.add_all(rows)
    db.session.commit()
    return [p.id for p in rows]


def instance(journey, version, profile_id, step_id, state="waiting", **fields) -> JourneyInstance:
    row = JourneyInstance(
        journey_id=journey.id,
        version_id=version.id,
        profile_id=profile_id,
        step_id=step_id,
        state=state,
        next_run_at=utcnow() if state in ("active", "waiting") else None,
        **fields,
    )
    db.session.add(row)
    db.session.commit()
    return row


def published(world, marketer, definition=None):
    journey = service.create_journey(marketer, "续方提醒", definition or refill(world))
    return journey, service.publish(marketer, journey.id)


def test_drafts_may_be_incomplete_but_are_objects_with_a_name(world, marketer):
    journey = service.create_journey(marketer, " 续方提醒 ", {"steps": []}, "按药品")
    assert (journey.name, journey.status, journey.live_version) == ("续方提醒", "draft", None)
    with pytest.raises(ValidationFailed) as err:
        service.create_journey(marketer, "x", ["not", "an", "object"])
    assert err.value.field == "definition"
    for name in ("", "  ", "x" * 121):
        with pytest.raises(ValidationFailed) as err:
            service.create_journey(marketer, name, {})
        assert err.value.field == "name"
    service.update_journey(marketer, journey.id, name="续方提醒 v2", definition=refill(world))
    assert service.get_journey(journey.id).draft == refill(world)
    with pytest.raises(NotFound):
        service.get_journey(9999)
    with pytest.raises(PermissionDenied):
        service.create_journey(world.team.reviewer, "x", {})
    actions = db.session.scalars(sa.select(AuditEntry.action)).all()
    assert {"journey.create", "journey.update"} <= set(actions)


def test_publishing_refuses_an_invalid_draft_with_every_problem(world, marketer):
    definition = refill(world)
    definition["start"] = "nope"
    step(definition, "tell")["content_id"] = 9999
    journey = service.create_journey(marketer, "坏的", definition)
    with pytest.raises(InvalidDefinition) as err:
        service.publish(marketer, journey.id)
    assert err.value.status == 422
    assert {(p["path"], p["code"]) for p in err.value.problems} >= {
        ("/start", "unknown_step"),
        ("/steps/5/content_id", "unknown_content"),
    }
    assert service.list_versions(journey.id) == []
    assert service.get_journey(journey.id).status == "draft"


def test_versions_are_immutable_and_editing_a_live_journey_leaves_them_alone(world, marketer):
    journey, first = published(world, marketer)
    assert (first.number, journey.live_version, journey.status) == (1, 1, "published")
    pinned = step(first.definition, "remind")["content_version_id"]
    assert pinned and "content_version_id" not in step(journey.draft, "remind")
    changed = refill(world)
    step(changed, "wait_buy")["timeout"] = "3d"
    service.update_journey(marketer, journey.id, definition=changed)
    db.session.expire_all()
    assert step(service.get_version(journey.id, 1).definition, "wait_buy")["timeout"] == "7d"
    second = service.publish(marketer, journey.id, note="shorter wait")
    assert [v.number for v in service.list_versions(journey.id)] == [2, 1]
    assert step(second.definition, "wait_buy")["timeout"] == "3d"
    assert service.get_journey(journey.id).live_version == 2
    with pytest.raises(NotFound):
        service.get_version(journey.id, 3)


def test_without_migration_people_finish_on_their_version(world, marketer):
    journey, first = published(world, marketer)
    (pid,) = profiles(1)
    row = instance(journey, first, pid, "wait_buy")
    second = service.publish(marketer, journey.id)
    db.session.refresh(row)
    assert (row.version_id, row.step_id) == (first.id, "wait_buy")
    assert second.number == 2


def test_migration_moves_live_instances_through_the_mapping_in_one_update(world, marketer):
    journey, first = published(world, marketer)
    a, b, c, d = profiles(4)
    waiting = instance(journey, first, a, "wait_buy", waiting_event="pos_purchase")
    at_coupon = instance(journey, first, b, "coupon", state="active")
    kept = instance(journey, first, c, "wait_runout")
    done = instance(journey, first, d, "coupon", state="completed")
    new = refill(world)
    new["steps"][2]["id"] = "wait_refill"  # wait_buy renamed, listening for another event
    new["steps"][2]["event"] = "miniprogram_order"
    step(new, "remind")["next"] = "wait_refill"
    service.update_journey(marketer, journey.id, definition=new)
    second = service.publish(marketer, journey.id, migrate={"wait_buy": "wait_refill"})
    db.session.expire_all()
    assert (waiting.version_id, waiting.step_id, waiting.waiting_event) == (
        second.id,
        "wait_refill",
        "miniprogram_order",
    )
    assert (at_coupon.version_id, at_coupon.step_id, at_coupon.waiting_event) == (
        second.id,
        "coupon",
        None,
    )
    assert (kept.version_id, kept.step_id) == (second.id, "wait_runout")
    assert done.version_id == first.id  # ended instances keep their history


def test_migration_that_would_strand_anyone_changes_nothing(world, marketer):
    journey, first = published(world, marketer)
    a, b = profiles(2)
    stuck = instance(journey, first, a, "wait_buy")
    fine = instance(journey, first, b, "wait_runout")
    new = refill(world)
    new["steps"][2]["id"] = "wait_refill"
    step(new, "remind")["next"] = "wait_refill"
    service.update_journey(marketer, journey.id, definition=new)
    with pytest.raises(ValidationFailed) as err:
        service.publish(marketer, journey.id, migrate={})
    assert err.value.field == "migrate" and "1 at 'wait_buy'" in err.value.message
    with pytest.raises(ValidationFailed) as err:
        service.publish(marketer, journey.id, migrate={"wait_buy": "wait_later"})
    assert "no step 'wait_later'" in err.value.message
    db.session.expire_all()
    assert [v.number for v in service.list_versions(journey.id)] == [1]
    assert service.get_journey(journey.id).live_version == 1
    assert (stuck.version_id, fine.version_id) == (first.id, first.id)


def test_lifecycle_transitions(world, marketer):
    journey = service.create_journey(marketer, "x", refill(world))
    with pytest.raises(Conflict):
        service.pause(marketer, journey.id)
    with pytest.raises(Conflict):
        service.resume(marketer, journey.id)
    service.publish(marketer, journey.id)
    assert service.pause(marketer, journey.id).status == "paused"
    with pytest.raises(Conflict):
        service.pause(marketer, journey.id)
    assert service.resume(marketer, journey.id).status == "published"
    service.pause(marketer, journey.id)
    assert service.publish(marketer, journey.id).number == 2  # publishing goes live again
    assert service.get_journey(journey.id).status == "published"
    with pytest.raises(PermissionDenied):
        service.archive(world.team.reviewer, journey.id)
    assert service.archive(marketer, journey.id).status == "archived"
    for attempt in (
        lambda: service.archive(marketer, journey.id),
        lambda: service.resume(marketer, journey.id),
        lambda: service.publish(marketer, journey.id),
        lambda: service.update_journey(marketer, journey.id, name="y"),
        lambda: service.set_test_mode(marketer, journey.id, enabled=False, profile_ids=[]),
    ):
        with pytest.raises(Conflict):
            attempt()
    assert [j.id for j in service.list_journeys("archived")] == [journey.id]
    assert service.list_journeys("draft") == []
    with pytest.raises(ValidationFailed):
        service.list_journeys("live")


def test_reviewers_may_not_publish(app, world):
    journey = service.create_journey(world.team.marketer, "x", refill(world))
    with pytest.raises(PermissionDenied):
        service.publish(world.team.reviewer, journey.id)
    analyst = Actor(kind="user", user_id=make_user(app, "analyst"), role="analyst")
    with pytest.raises(PermissionDenied):
        service.publish(analyst, journey.id)


def test_archive_ends_live_instances_and_skips_pending_sends(world, marketer):
    journey, version = published(world, marketer)
    a, b, c = profiles(3)
    live = instance(journey, version, a, "wait_buy", waiting_event="pos_purchase")
    ended = instance(journey, version, b, "tell", state="completed")
    keys = {}
    for status in ("pending", "deferred", "sent"):
        row = Delivery(
            key=f"{live.id}:remind:{status}",
            journey_id=journey.id,
            version_id=version.id,
            instance_id=live.id,
            step_id="remind",
            profile_id=c,
            action="send",
            channel="wechat",
            status=status,
        )
        db.session.add(row)
        db.session.commit()
        keys[status] = row
    service.archive(marketer, journey.id)
    db.session.expire_all()
    assert (live.state, live.exit_reason, live.next_run_at, live.waiting_event) == (
        "exited",
        "archived",
        None,
        None,
    )
    assert live.ended_at is not None
    assert (ended.state, ended.exit_reason) == ("completed", None)
    assert [(keys[s].status, keys[s].reason) for s in ("pending", "deferred", "sent")] == [
        ("skipped", "journey_archived"),
        ("skipped", "journey_archived"),
        ("sent", None),
    ]
    log = db.session.scalars(sa.select(JourneyStepLog)).all()
    assert [(r.instance_id, r.step_id, r.outcome) for r in log] == [
        (live.id, "wait_buy", "exited:archived")
    ]


def test_test_mode_needs_existing_profiles(world, marketer):
    journey = service.create_journey(marketer, "x", refill(world))
    a, b = profiles(2)
    service.set_test_mode(marketer, journey.id, enabled=True, profile_ids=[a, b, a])
    assert (journey.test_mode, journey.test_profile_ids) == (True, [a, b])
    for ids in ([], [a, 99999], list(range(1, 52)), ["a"]):
        with pytest.raises(ValidationFailed) as err:
            service.set_test_mode(marketer, journey.id, enabled=True, profile_ids=ids)
        assert err.value.field == "profile_ids"
    service.set_test_mode(marketer, journey.id, enabled=False, profile_ids=[])
    assert journey.test_mode is False


def _join(segment_id: int, profile_ids: list[int]) -> None:
    db.session.add_all(
        SegmentMembership(segment_id=segment_id, profile_id=p, entered_at=utcnow())
        for p in profile_ids
    )
    db.session.commit()


def test_dry_run_counts_who_would_enter_now(world, marketer, app):
    app.config["JOURNEY_GLOBAL_CONTROL_PERCENT"] = 30
    patients, doctors = profiles(40), profiles(3, "hcp")
    _join(world.segment, patients[:30] + doctors)
    definition = refill(world)
    definition.update(category="marketing", trigger={"type": "segment_entry", "segment_id": 1})
    step(definition, "wait_buy")["match_entry_key"] = False
    definition["trigger"]["segment_id"] = world.segment
    journey, version = published(world, marketer, definition)
    members = patients[:30]
    control = [p for p in members if in_global_control(p)]
    assert 0 < len(control) < 30
    result = dry_run.dry_run(journey.id, limit=5)
    assert result["count"] == 30 - len(control)
    assert result["excluded_control"] == len(control)
    assert result["sample"] == [p for p in members if p not in control][:5]
    # Someone inside already cannot enter again (re-entry after exit), and nobody who
    # refused automated marketing enters a marketing journey.
    first, second = result["sample"][:2]
    instance(journey, version, first, "wait_runout")
    record_consent(SYSTEM, second, "automated_marketing", "*", "withdrawn")
    db.session.commit()
    assert dry_run.dry_run(journey.id)["count"] == 28 - len(control)
    # Event triggers: the audience (kind and segment) is the estimate.
    service.update_journey(marketer, journey.id, definition=refill(world))
    assert dry_run.dry_run(journey.id)["count"] == 30  # a service journey: no control group
    # Test mode: only the test profiles.
    service.set_test_mode(marketer, journey.id, enabled=True, profile_ids=[patients[0], doctors[0]])
    assert dry_run.dry_run(journey.id)["sample"] == [patients[0]]
    with pytest.raises(InvalidDefinition):
        dry_run.dry_run(journey.id, definition={"steps": []})


def test_stats_from_instances_step_log_and_outbox(world, marketer):
    journey, version = published(world, marketer)
    people = profiles(12)
    rows = []
    # 8 treated (3 converted), 4 holdout (1 converted); one more is a test instance, and one
    # is in the global control group (a holdout as well).
    for n, pid in enumerate(people):
        state = ("waiting", "active", "completed", "exited")[n % 4]
        rows.append(
            instance(
                journey,
                version,
                pid,
                "wait_buy" if state == "waiting" else "coupon",
                state=state,
                holdout=n >= 8,
                converted_at=utcnow() if n in (0, 1, 2, 8) else None,
                exit_reason="unsubscribed" if state == "exited" else None,
            )
        )
    tester = instance(journey, version, profiles(1)[0], "wait_buy", test=True)
    control = instance(journey, version, profiles(1)[0], None, state="exited", holdout=True)
    control.exit_reason = "global_control"  # how the engine records the global control group
    log = [("remind", "entered")] * 10 + [("remind", "done")] * 9 + [("remind", "deferred:quiet")]
    log += [("wait_buy", "entered")] * 9 + [("wait_buy", "event")] * 3 + [("wait_buy", "timeout")]
    log += [("coupon", "exited:unsubscribed"), ("coupon", "failed:budget")]
    for step_id, outcome in log:
        db.session.add(
            JourneyStepLog(
                instance_id=rows[0].id,
                journey_id=journey.id,
                version_id=version.id,
                step_id=step_id,
                outcome=outcome,
            )
        )
    db.session.add(
        JourneyStepLog(
            instance_id=tester.id,
            journey_id=journey.id,
            version_id=version.id,
            step_id="remind",
            outcome="entered",
        )
    )
    sends = ["sent"] * 2 + ["delivered"] * 3 + ["failed", "uncertain", "deferred"]
    sends += ["skipped:no_marketing_consent"] * 2 + ["skipped:cap", "preview"]
    for n, status in enumerate(sends):
        status, _, reason = status.partition(":")
        db.session.add(
            Delivery(
                key=f"k{n}",
                journey_id=journey.id,
                version_id=version.id,
                step_id="remind",
                profile_id=people[0],
                action="send",
                status=status,
                reason=reason or None,
                test=status == "preview",
            )
        )
    db.session.commit()

    result = journey_stats(journey.id)
    assert result["totals"] == {
        "entered": 12,
        "active": 3,
        "waiting": 3,
        "completed": 3,
        "exited": 3,
        "failed": 0,
        "converted": 4,
        "global_control": 1,
    }
    assert result["exits"] == {"unsubscribed": 3}
    remind, wait_buy, coupon = (result["steps"][s] for s in ("remind", "wait_buy", "coupon"))
    assert (remind["entered"], remind["completed"], remind["now"]) == (10, 9, 0)
    assert (remind["sent"], remind["delivered"], remind["failed"], remind["deferred"]) == (
        5,
        3,
        2,
        1,
    )
    assert remind["skipped"] == {"no_marketing_consent": 2, "cap": 1}
    assert remind["preview"] == 0  # test deliveries are not counted
    assert (wait_buy["entered"], wait_buy["completed"], wait_buy["now"]) == (9, 4, 3)
    assert wait_buy["outcomes"] == {"entered": 9, "event": 3, "timeout": 1}
    assert (coupon["exited"], coupon["completed"], coupon["now"]) == (1, 0, 3)
    assert list(result["steps"])[:6] == [s["id"] for s in version.definition["steps"]]
    goal = result["goal"]
    assert goal["treatment"] == {"n": 8, "converted": 3, "rate": 3 / 8}
    assert goal["holdout"] == {"n": 5, "converted": 1, "rate": 1 / 5}
    assert goal["lift"] == pytest.approx(0.175)
    low, high = goal["ci95"]
    margin = 1.959964 * ((3 / 8 * 5 / 8) / 8 + (1 / 5 * 4 / 5) / 5) ** 0.5
    assert (low, high) == pytest.approx((0.175 - margin, 0.175 + margin))
    # One version only, and no holdout: no comparison.
    assert journey_stats(journey.id, version=1)["totals"]["entered"] == 12
    service.update_journey(marketer, journey.id, definition=refill(world))
    service.publish(marketer, journey.id)
    empty = journey_stats(journey.id, version=2)
    assert empty["totals"]["entered"] == 0 and empty["goal"]["ci95"] is None


def test_deliveries_newest_first_with_filters(world, marketer):
    journey, version = published(world, marketer)
    a, b = profiles(2)
    for n, (pid, status) in enumerate([(a, "sent"), (b, "skipped"), (a, "skipped"), (a, "sent")]):
        db.session.add(
            Delivery(
                key=f"k{n}",
                journey_id=journey.id,
                version_id=version.id,
                step_id="remind",
                profile_id=pid,
                action="send",
                status=status,
            )
        )
    db.session.commit()
    ids = db.session.scalars(sa.select(Delivery.id).order_by(Delivery.id)).all()
    assert [d.id for d in deliveries(profile_id=a)] == [ids[3], ids[2], ids[0]]
    assert [d.id for d in deliveries(status="skipped")] == [ids[2], ids[1]]
    assert [d.id for d in deliveries(journey_id=journey.id, limit=2, before_id=ids[3])] == [
        ids[2],
        ids[1],
    ]
    assert deliveries(journey_id=journey.id + 1) == []
    assert db.session.scalar(sa.select(sa.func.count()).select_from(JourneyVersion)) == 1


@pytest.fixture
def pg_world(postgres_url):
    app = make_app(postgres_url)
    migrate_database(app)
    with app.app_context():
        yield World(app)
        db.session.remove()
        db.engine.dispose()


@pytest.mark.services
def test_the_hand_written_sql_runs_on_postgresql(pg_world):
    """Migration CASE updates, archive INSERT…SELECT, dry-run and stats aggregates."""
    world, marketer = pg_world, pg_world.team.marketer
    pg_world.app.config["JOURNEY_GLOBAL_CONTROL_PERCENT"] = 50
    journey, first = published(world, marketer)
    a, b, c = profiles(3)
    waiting = instance(journey, first, a, "wait_buy", waiting_event="pos_purchase")
    instance(journey, first, b, "coupon", state="active", converted_at=utcnow())
    new = refill(world)
    new["steps"][2]["id"] = "wait_refill"
    step(new, "remind")["next"] = "wait_refill"
    service.update_journey(marketer, journey.id, definition=new)
    with pytest.raises(ValidationFailed):
        service.publish(marketer, journey.id, migrate={})
    second = service.publish(marketer, journey.id, migrate={"wait_buy": "wait_refill"})
    db.session.expire_all()
    assert (waiting.version_id, waiting.step_id, waiting.waiting_event) == (
        second.id,
        "wait_refill",
        "pos_purchase",
    )
    segment_journey = refill(world)
    segment_journey.update(category="marketing")
    segment_journey["trigger"] = {"type": "segment_entry", "segment_id": world.segment}
    step(segment_journey, "wait_buy")["match_entry_key"] = False
    _join(world.segment, [a, b, c])
    other, _ = published(world, marketer, segment_journey)
    result = dry_run.dry_run(other.id)
    assert result["count"] + result["excluded_control"] == 3
    assert journey_stats(journey.id)["totals"]["entered"] == 2
    service.archive(marketer, journey.id)
    db.session.expire_all()
    assert (waiting.state, waiting.exit_reason) == ("exited", "archived")
    assert journey_stats(journey.id)["exits"] == {"archived": 2}
