"""Journeys in the web UI: list, create from a starter, builder, save, live validation,
publish (refused with problems, then accepted), pause/resume/archive, versions with diff,
statistics, test mode and dry run, and who may do what."""

from __future__ import annotations

import html as htmllib
import re
from datetime import timedelta

import orjson
import sqlalchemy as sa
from flask_babel import gettext

from cdp.actors import SYSTEM
from cdp.auth.permissions import allowed
from cdp.db import db, utcnow
from cdp.models import Profile
from journeys import service
from journeys.models import Delivery, Journey, JourneyInstance, JourneyStepLog, JourneyVersion
from tests.conftest import csrf_token_from, make_user
from tests.test_content import Team, approved
from tests.test_ui import Page, _html

VALID = {
    "audience": {"kind": "patient"},
    "trigger": {"type": "event", "event": "signup"},
    "goal": {"event": "pos_purchase", "within_days": 14},
    "start": "wait",
    "steps": [
        {"id": "wait", "type": "wait", "label": "等一天", "duration": "1d", "next": "tag"},
        {"id": "tag", "type": "update_trait", "trait": "welcomed", "value": True, "next": "done"},
        {"id": "done", "type": "exit"},
    ],
}
TABS = ("", "/versions", "/stats", "/test")
BROKEN = {**VALID, "steps": [{**VALID["steps"][0], "next": "nowhere"}, *VALID["steps"][1:]]}


def make_journey(app, definition=VALID, name="欢迎旅程") -> int:
    with app.app_context():
        return service.create_journey(SYSTEM, name, definition, "新关注用户").id


def token(client, path="/journeys") -> str:
    return csrf_token_from(client.get(path).get_data(as_text=True))


def post(client, path, data=None, page="/journeys", follow=False):
    return client.post(
        path, data={**(data or {}), "csrf_token": token(client, page)}, follow_redirects=follow
    )


def config_of(html: str) -> dict:
    raw = re.search(r'data-config="([^"]+)"', html).group(1)
    return orjson.loads(htmllib.unescape(raw))


def draft_of(app, journey_id: int) -> dict:
    with app.app_context():
        return db.session.get(Journey, journey_id).draft


def test_list_shows_journeys_with_status_and_counts(app, client, auth, admin):
    jid = make_journey(app)
    auth.login()
    html = _html(client.get("/journeys"))
    page = Page(html)
    assert page.heading == "旅程"
    assert ("/journeys", "旅程") in page.nav
    assert "欢迎旅程" in page.texts and "草稿" in page.texts and "新关注用户" in page.texts
    assert f'href="/journeys/{jid}/stats"' in html and 'data-testid="new-journey"' in html
    assert "style=" not in html  # CSP: no inline styles
    assert 'data-testid="journey-' in _html(client.get("/journeys?status=draft"))
    assert "欢迎旅程" not in Page(_html(client.get("/journeys?status=published"))).texts


def test_create_from_the_refill_starter_opens_the_builder(app, client, auth):
    with app.app_context():
        team = Team(app)
        sms = approved(team).item_id  # an approved SMS: not what a WeChat step can send
    auth.login("admin@test.cn")
    page = Page(_html(client.get("/journeys/new")))
    assert page.heading == "新建旅程" and "续药提醒（按药品）" in page.texts
    response = post(client, "/journeys/new", {"name": "续药提醒", "starter": "refill"})
    assert response.status_code == 302
    with app.app_context():
        journey = db.session.scalar(sa.select(Journey))
        steps = {s["id"]: s for s in journey.draft["steps"]}
    assert response.headers["Location"] == f"/journeys/{journey.id}"
    assert journey.draft["trigger"]["entry_key"] == "drug_code"
    assert steps["wait_purchase"]["timeout_next"] == "coupon"
    assert steps["remind"]["label"] == "续药提醒" and "content_id" not in steps["remind"]

    html = _html(client.get(response.headers["Location"]))
    page = Page(html)
    assert page.heading == "续药提醒" and "草稿已创建。先搭建步骤，再发布。" in page.texts
    assert "/static/vendor/cytoscape/cytoscape.min.js" in page.urls
    assert "/static/js/journey-builder.js" in page.urls
    assert re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html) is None  # CSP: no inline scripts
    assert "style=" not in html
    config = config_of(html)
    assert config["validate_url"] == "/journeys/validate" and config["editable"] is True
    assert [c["id"] for c in config["content"]] == [sms]
    assert config["content"][0]["channels"] == ["sms"]
    assert "quiz_completed" in config["actions"]
    # Without JavaScript: the steps and the draft's problems, rendered by the server.
    assert 'data-step="before_run_out"' in html
    assert "<code>/steps/1</code>" in html  # the WeChat reminder has no content yet


def test_create_needs_a_name(app, client, auth, admin):
    auth.login()
    response = post(client, "/journeys/new", {"name": " ", "starter": "welcome"})
    assert response.status_code == 422
    assert "name must be 1 to 120 characters" in _html(response)
    assert post(client, "/journeys/new", {"name": "x", "starter": "nope"}).status_code == 400


def test_save_draft_keeps_unfinished_work_and_refuses_broken_json(app, client, auth, admin):
    jid = make_journey(app)
    auth.login()
    data = {"name": "欢迎旅程 v2", "description": "", "definition": orjson.dumps(BROKEN).decode()}
    response = post(client, f"/journeys/{jid}", data, page=f"/journeys/{jid}")
    assert response.status_code == 302 and response.headers["Location"] == f"/journeys/{jid}"
    assert draft_of(app, jid)["steps"][0]["next"] == "nowhere"
    html = _html(client.get(f"/journeys/{jid}"))
    assert "草稿已保存。" in Page(html).texts and "<code>/steps/0/next</code>" in html

    data["definition"] = "{not json"
    response = post(client, f"/journeys/{jid}", data, page=f"/journeys/{jid}")
    assert response.status_code == 422 and "不是有效的 JSON" in _html(response)
    assert "{not json" in _html(response)  # what was typed is kept for fixing
    no_token = client.post(f"/journeys/{jid}", data={"definition": "{}", "name": "x"})
    assert no_token.status_code == 400


def test_live_validation_endpoint_lists_every_problem_with_its_path(client, auth, admin):
    auth.login()
    headers = {"X-CSRFToken": token(client)}
    ok = client.post("/journeys/validate", json={"definition": VALID}, headers=headers)
    assert ok.status_code == 200 and ok.json == {"valid": True, "problems": []}
    bad = client.post("/journeys/validate", json={"definition": BROKEN}, headers=headers)
    assert bad.status_code == 200 and bad.json["valid"] is False
    assert {"path": "/steps/0/next", "code": "unknown_step"}.items() <= bad.json["problems"][
        0
    ].items()
    garbage = client.post("/journeys/validate", json={"definition": [1]}, headers=headers)
    assert garbage.json["valid"] is False
    assert client.post("/journeys/validate", json={"definition": VALID}).status_code == 400


def test_publish_is_refused_with_every_problem_then_accepted(app, client, auth, admin):
    jid = make_journey(app, BROKEN)
    auth.login()
    page = f"/journeys/{jid}"
    refused = post(client, f"{page}/publish", {"note": "首发"}, page=page)
    assert refused.status_code == 422
    html = _html(refused)
    assert 'data-testid="publish-problems"' in html and "<code>/steps/0/next</code>" in html
    assert "no step &#39;nowhere&#39;" in html
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(JourneyVersion)) == 0

    data = {"name": "欢迎旅程", "definition": orjson.dumps(VALID).decode()}
    post(client, page, data, page=page)
    done = post(client, f"{page}/publish", {"note": "首发"}, page=page, follow=True)
    html = _html(done)
    assert "已发布为版本 1。" in Page(html).texts
    assert (
        'data-testid="journey-status">已发布<' in html and 'data-testid="live-version">v1<' in html
    )
    with app.app_context():
        version = db.session.scalar(sa.select(JourneyVersion))
        assert (version.number, version.note, version.published_by_id) == (1, "首发", admin)


def test_pause_resume_and_archive(app, client, auth, admin):
    jid = make_journey(app)
    with app.app_context():
        service.publish(SYSTEM, jid)
    auth.login()
    page = f"/journeys/{jid}"
    html = _html(post(client, f"{page}/pause", page=page, follow=True))
    assert 'data-testid="journey-status">已暂停<' in html and 'data-testid="resume"' in html
    assert 'data-testid="pause"' not in html
    html = _html(post(client, f"{page}/pause", page=page, follow=True))
    assert "未完成" in html and "cannot pause a journey that is paused" in html
    html = _html(post(client, f"{page}/resume", page=page, follow=True))
    assert 'data-testid="journey-status">已发布<' in html
    html = _html(post(client, f"{page}/archive", page=page, follow=True))
    assert 'data-testid="journey-status">已归档<' in html
    assert 'data-testid="publish"' not in html and 'data-testid="save"' not in html
    assert config_of(html)["editable"] is False
    assert client.post(f"{page}/pause").status_code == 400  # no CSRF token


def test_versions_and_the_diff_against_the_previous_one(app, client, auth, admin):
    jid = make_journey(app)
    with app.app_context():
        service.publish(SYSTEM, jid, note="首发")
        changed = orjson.loads(orjson.dumps(VALID))
        changed["steps"][0]["duration"] = "2d"
        service.update_journey(SYSTEM, jid, definition=changed)
        service.publish(SYSTEM, jid, note="多等一天")
    auth.login()
    html = _html(client.get(f"/journeys/{jid}/versions"))
    page = Page(html)
    assert "多等一天" in page.texts and "首发" in page.texts
    assert 'data-testid="version-2"' in html and "线上" in page.texts
    # The newest version is compared with the one before it, line by line.
    assert '<span class="diff-del">-      &#34;duration&#34;: &#34;1d&#34;,</span>' in html
    assert '<span class="diff-add">+      &#34;duration&#34;: &#34;2d&#34;,</span>' in html
    first = _html(client.get(f"/journeys/{jid}/versions?diff=1"))
    assert first.count('class="diff-add"') > 10 and 'class="diff-del"' not in first
    assert "没有变化。" in Page(_html(client.get(f"/journeys/{jid}/versions?diff=draft"))).texts
    assert client.get(f"/journeys/{jid}/versions?diff=9").status_code == 404


def people_through(app, jid: int, step: str = "wait") -> None:
    """Six people: five entered ``step`` (one waits there still, one is a holdout, two
    converted), one was kept out as global control; and a send skipped in quiet hours."""
    with app.app_context():
        version = db.session.scalar(sa.select(JourneyVersion))
        now = utcnow()
        people = [Profile(kind="patient", traits={}) for _ in range(6)]
        db.session.add_all(people)
        db.session.flush()
        plan = [  # state, current step, exit reason, holdout, converted
            ("waiting", step, None, False, False),
            ("completed", None, None, False, True),
            ("completed", None, None, False, True),
            ("exited", None, "exit_event", False, False),
            ("completed", None, "holdout", True, False),
            ("exited", None, "global_control", True, False),
        ]
        for person, (state, current, reason, holdout, converted) in zip(people, plan, strict=True):
            instance = JourneyInstance(
                journey_id=jid, version_id=version.id, profile_id=person.id, step_id=current,
                state=state, exit_reason=reason, holdout=holdout,
                converted_at=now if converted else None,
            )  # fmt: skip
            db.session.add(instance)
            db.session.flush()
            if reason == "global_control":
                continue  # never entered a step
            db.session.add(JourneyStepLog(instance_id=instance.id, journey_id=jid,
                                          version_id=version.id, step_id=step, outcome="entered"))  # fmt: skip
        db.session.add(
            Delivery(
                key=f"{jid}:tag:1",
                journey_id=jid,
                version_id=version.id,
                step_id="tag",
                profile_id=people[1].id,
                action="update_trait",
                status="skipped",
                reason="quiet_hours",
                created_at=now - timedelta(minutes=1),
            )  # fmt: skip
        )
        db.session.commit()


def test_statistics_per_step_exits_and_goal_against_the_holdout(app, client, auth, admin):
    jid = make_journey(app)
    with app.app_context():
        service.publish(SYSTEM, jid)
    people_through(app, jid)
    auth.login()
    html = _html(client.get(f"/journeys/{jid}/stats"))
    page = Page(html)
    assert 'data-testid="total-entered">5<' in html and 'data-testid="total-converted">2<' in html
    assert 'data-testid="total-global_control">1<' in html and "全局对照组" in page.texts
    assert "退出事件" in page.texts  # exits by reason
    assert "免打扰时段: 1" in page.texts  # the skipped send, by reason
    assert re.search(
        r'data-testid="step-wait">.*?<td class="num">5</td>\s*<td class="num">1</td>', html, re.S
    )
    # Treatment 2 of 4 converted, holdout 0 of 2: +50 points, with a 95% interval.
    assert re.search(r'data-testid="goal-treatment">.*?50\.0%', html, re.S)
    assert "+50.0" in html and "95% 置信区间" in html
    listed = _html(client.get("/journeys"))
    assert re.search(r'data-testid="journey-\d+">(.*?<td class="num">){3}2</td>', listed, re.S)
    assert client.get(f"/journeys/{jid}/stats?version=1").status_code == 200
    builder = config_of(_html(client.get(f"/journeys/{jid}")))
    assert builder["stats"]["wait"] == {
        "entered": 5, "now": 1, "sent": 0, "skipped": 0, "outcomes": {"entered": 5}
    }  # fmt: skip
    assert builder["stats"]["tag"]["skipped"] == 1


def test_test_mode_and_dry_run(app, client, auth, admin):
    jid = make_journey(app)
    with app.app_context():
        people = [Profile(kind="patient", traits={}) for _ in range(3)]
        db.session.add_all(people)
        db.session.commit()
        ids = [p.id for p in people]
    auth.login()
    page = f"/journeys/{jid}/test"
    html = _html(client.get(page))
    assert "只有所选的测试用户会进入" in html and 'data-testid="dry-run"' in html
    done = post(client, page, {"profile_ids": f"{ids[0]}，{ids[1]}", "enabled": "on"}, page=page,
                follow=True)  # fmt: skip
    html = _html(done)
    assert "测试模式已开启。" in Page(html).texts and 'data-testid="test-mode-on"' in html
    with app.app_context():
        journey = db.session.get(Journey, jid)
        assert (journey.test_mode, journey.test_profile_ids) == (True, ids[:2])
    bad = post(client, page, {"profile_ids": "12a", "enabled": "on"}, page=page)
    assert bad.status_code == 422 and "用户档案 ID 是以逗号分隔的数字。" in _html(bad)
    missing = post(client, page, {"profile_ids": "999999", "enabled": "on"}, page=page)
    assert missing.status_code == 422 and "no such (live) profile: 999999" in _html(missing)

    html = _html(post(client, f"/journeys/{jid}/dry-run", page=page))
    assert 'data-testid="dry-count">2<' in html  # test mode: only the test profiles
    assert f'href="/profiles/{ids[0]}" data-testid="dry-sample"' in html
    assert client.post(f"/journeys/{jid}/dry-run").status_code == 400  # no CSRF token


def test_reviewer_sees_journeys_but_cannot_edit_test_or_publish(app, client, auth):
    jid = make_journey(app)
    make_user(app, "reviewer", "reviewer@test.cn")
    auth.login("reviewer@test.cn")
    html = _html(client.get("/journeys"))
    assert "欢迎旅程" in Page(html).texts and 'data-testid="new-journey"' not in html
    html = _html(client.get(f"/journeys/{jid}"))
    assert config_of(html)["editable"] is False
    for control in ('data-testid="save"', 'data-testid="publish"', 'data-testid="archive"'):
        assert control not in html
    assert 'data-testid="dry-run"' not in _html(client.get(f"/journeys/{jid}/test"))
    assert client.get("/journeys/new").status_code == 403
    page = f"/journeys/{jid}"
    assert post(client, f"{page}/publish", page=page).status_code == 403
    assert post(client, page, {"definition": "{}", "name": "x"}, page=page).status_code == 403
    assert post(client, f"{page}/test", {"profile_ids": ""}, page=page).status_code == 403
    assert client.get(f"{page}/stats").status_code == 200


def test_marketer_builds_and_publishes_only_with_the_publish_permission(app, client, auth):
    jid = make_journey(app)
    make_user(app, "marketer", "marketer@test.cn")
    auth.login("marketer@test.cn")
    html = _html(client.get(f"/journeys/{jid}"))
    assert config_of(html)["editable"] is True and 'data-testid="save"' in html
    may_publish = allowed("marketer", "journeys:publish")  # the role table decides
    assert ('data-testid="publish"' in html) is may_publish
    response = post(client, f"/journeys/{jid}/publish", page=f"/journeys/{jid}")
    assert response.status_code == (302 if may_publish else 403)


def test_publish_can_move_people_inside_onto_the_new_version(app, client, auth, admin):
    jid = make_journey(app)
    with app.app_context():
        service.publish(SYSTEM, jid)
    people_through(app, jid)  # one person waits at "wait"
    renamed = orjson.loads(orjson.dumps(VALID))
    renamed["start"] = renamed["steps"][0]["id"] = "pause_1d"
    auth.login()
    page = f"/journeys/{jid}"
    post(
        client, page, {"name": "欢迎旅程", "definition": orjson.dumps(renamed).decode()}, page=page
    )
    stranded = post(client, f"{page}/publish", {"migrate": "on", "mapping": ""}, page=page)
    assert "未完成" in _html(client.get(stranded.headers["Location"]))  # "wait" is gone in v2
    form = {"migrate": "on", "mapping": "wait: pause_1d", "note": "改名"}
    html = _html(post(client, f"{page}/publish", form, page=page, follow=True))
    assert "已发布为版本 2。" in Page(html).texts
    with app.app_context():
        moved = db.session.scalar(
            sa.select(JourneyInstance).where(JourneyInstance.step_id.is_not(None))
        )
        assert moved.step_id == "pause_1d"
        assert db.session.get(JourneyVersion, moved.version_id).number == 2


def test_every_journey_page_is_in_chinese(app, client, auth, admin):
    jid = make_journey(app)
    with app.app_context():
        service.publish(SYSTEM, jid, note="首发")
    people_through(app, jid)
    auth.login()
    for path in ("/journeys", "/journeys/new", *(f"/journeys/{jid}{tab}" for tab in TABS)):
        page = Page(_html(client.get(path)))
        with app.test_request_context("/"):
            leftovers = [t for t in page.texts if t.isascii() and gettext(t) != t]
        assert not leftovers, f"untranslated text on {path}: {leftovers}"
