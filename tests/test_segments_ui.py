"""Segments in the web UI: list, builder (form and live-count endpoint), detail, export."""

from __future__ import annotations

import html as htmllib
import re

import orjson
import pytest
import sqlalchemy as sa

from cdp.actors import SYSTEM
from cdp.db import db
from cdp.models import AuditEntry, JobRun
from segments import service, tasks
from segments.models import Segment
from tests.conftest import csrf_token_from, make_user
from tests.test_segments_membership import person, pid, send
from tests.test_ui import Page, _html

SHANGHAI = {"rule": {"type": "trait", "trait": "city", "op": "equals", "value": "上海"}}
BUYERS = {"rule": {"type": "event_count", "event": "pos_purchase", "op": "gte", "value": 1}}


@pytest.fixture
def people(app):
    from cdp.sources import create_source

    with app.app_context():
        source, _ = create_source(SYSTEM, "CRM", "http")
        send(source.id, *person("a", "上海", reads=2), *person("b", "上海"), *person("c", "北京"))
        return {user: pid(user) for user in "abc"}


def computed(app, name: str, definition: dict) -> int:
    with app.app_context():
        segment = service.create_segment(SYSTEM, name, definition)
        job = tasks.create_refresh_job(SYSTEM, [segment.id])
        tasks.run_refresh(job.id, [segment.id])
        return segment.id


def test_list_shows_segments_and_the_overlap_of_two(app, client, auth, admin, people):
    one = computed(app, "上海患者", SHANGHAI)
    two = computed(app, "买过药", BUYERS)
    auth.login()
    page = Page(_html(client.get("/segments")))
    assert page.heading == "人群分组"
    assert "上海患者" in page.texts and "买过药" in page.texts
    assert "健康数据" in page.texts  # the badge of the health-data segment
    html = _html(client.get(f"/segments?a={one}&b={two}"))
    assert 'data-testid="overlap-both">0<' in html
    assert "<svg" in html and 'class="seg-bar"' in html
    assert "style=" not in html  # CSP: no inline styles


def test_builder_page_carries_the_schema_and_translated_labels_without_inline_script(
    client, auth, admin
):
    auth.login()
    html = _html(client.get("/segments/new"))
    page = Page(html)
    assert page.heading == "新建人群分组"
    assert "/static/js/segments.js" in page.urls
    assert re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html) is None  # CSP: no inline scripts
    raw = re.search(r'data-config="([^"]+)"', html).group(1)
    config = orjson.loads(htmllib.unescape(raw))
    types = {t["type"]: t for t in config["types"]}
    assert types["refill_lapse"]["label"] == "续药中断（用完后未再购买）"
    assert types["trait"]["schema"]["properties"]["op"]["enum"][0] == "equals"
    assert config["values"]["gte"] == "至少" and config["text"]["and"] == "满足全部"
    assert config["preview_url"] == "/segments/preview"
    assert '"rule": {' in htmllib.unescape(html)  # the JSON editor starts with an empty rule


def _token(client, path="/segments/new") -> str:
    return csrf_token_from(client.get(path).get_data(as_text=True))


def test_live_count_endpoint_answers_count_sample_errors_and_health_notice(
    client, auth, admin, people
):
    auth.login()
    headers = {"X-CSRFToken": _token(client)}
    ok = client.post("/segments/preview", json={"definition": SHANGHAI}, headers=headers)
    assert ok.status_code == 200
    assert ok.json["count"] == 2 and ok.json["notice"] is None
    assert sorted(p["profile_id"] for p in ok.json["sample"]) == [people["a"], people["b"]]
    health = client.post("/segments/preview", json={"definition": BUYERS}, headers=headers)
    assert health.json["health_data"] is True and "个人信息保护法" in health.json["notice"]
    bad = {"rule": {"type": "age", "op": "between", "value": [60, 40]}}
    errors = client.post("/segments/preview", json={"definition": bad}, headers=headers)
    assert errors.status_code == 200 and errors.json["valid"] is False
    assert errors.json["errors"] == [
        {
            "path": "/rule/value",
            "message": "the lower bound of between must not exceed the upper bound",
        }
    ]
    assert client.post("/segments/preview", json={"definition": SHANGHAI}).status_code == 400


def test_create_with_the_form_then_see_it_computed(app, client, auth, admin, people):
    auth.login()
    form = {
        "csrf_token": _token(client),
        "name": "上海患者",
        "description": "城市为上海",
        "realtime": "on",
        "definition": orjson.dumps(SHANGHAI).decode(),
    }
    response = client.post("/segments/new", data=form)
    assert response.status_code == 302
    with app.app_context():
        segment = db.session.scalar(sa.select(Segment))
        assert (segment.name, segment.realtime, segment.description) == (
            "上海患者",
            True,
            "城市为上海",
        )
        job = db.session.scalar(sa.select(JobRun).where(JobRun.kind == "segments-refresh"))
        tasks.refresh_job(job.id)  # what the worker does with the queued job
    assert response.headers["Location"] == f"/segments/{segment.id}"
    html = _html(client.get(response.headers["Location"]))
    page = Page(html)
    assert page.heading == "上海患者"
    assert 'data-testid="segment-size">2<' in html
    assert html.count('data-testid="member"') == 2
    assert 'data-testid="size-chart"' in html and "<polyline" in html
    assert "成功" in page.texts  # the refresh job succeeded
    assert "导出 CSV" in page.texts


def test_invalid_definition_is_shown_with_its_path_and_nothing_is_saved(app, client, auth, admin):
    auth.login()
    bad = {"rule": {"and": [{"type": "trait", "trait": "city", "op": "in", "value": "上海"}]}}
    form = {"csrf_token": _token(client), "name": "坏的", "definition": orjson.dumps(bad).decode()}
    response = client.post("/segments/new", data=form)
    assert response.status_code == 422
    html = _html(response)
    assert "<code>/rule/and/0/value</code>" in html and "is not of type" in html
    form["definition"] = "{not json"
    assert "不是有效的 JSON" in _html(client.post("/segments/new", data=form))
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Segment)) == 0


def test_detail_health_notice_refresh_edit_and_archive(app, client, auth, admin, people):
    sid = computed(app, "买过药", BUYERS)
    auth.login()
    html = _html(client.get(f"/segments/{sid}"))
    assert 'data-testid="health-notice"' in html and "个人信息保护法" in html
    token = csrf_token_from(html)
    assert client.post(f"/segments/{sid}/refresh", data={"csrf_token": token}).status_code == 302
    with app.app_context():
        assert db.session.scalar(
            sa.select(sa.func.count()).select_from(JobRun).where(JobRun.status == "queued")
        )
    status = client.get(f"/segments/{sid}/status").json
    assert status["job"]["status"] == "queued"
    edit = _html(client.get(f"/segments/{sid}/edit"))
    assert "pos_purchase" in edit
    form = {"csrf_token": token, "name": "改名了", "definition": orjson.dumps(SHANGHAI).decode()}
    assert client.post(f"/segments/{sid}/edit", data=form).status_code == 302
    with app.app_context():
        segment = db.session.get(Segment, sid)
        assert (segment.name, segment.version, segment.health_data) == ("改名了", 2, False)
        assert segment.realtime is False  # the checkbox was not sent
    assert client.post(f"/segments/{sid}/archive", data={"csrf_token": token}).status_code == 302
    with app.app_context():
        assert db.session.get(Segment, sid).status == "archived"


def test_export_from_the_ui_is_audited(app, client, auth, admin, people):
    sid = computed(app, "上海患者", SHANGHAI)
    auth.login()
    response = client.get(f"/segments/{sid}/export.csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert str(people["a"]) in response.get_data(as_text=True)
    with app.app_context():
        entry = db.session.scalar(
            sa.select(AuditEntry).where(AuditEntry.action == "segment.export")
        )
        assert entry.actor_type == "user" and entry.object_id == str(sid)


def test_roles(app, client, auth):
    make_user(app, "reviewer", "reviewer@test.cn")
    auth.login("reviewer@test.cn")
    assert client.get("/segments").status_code == 403
    auth.logout()
    make_user(app, "analyst", "analyst@test.cn")
    auth.login("analyst@test.cn")
    assert client.get("/segments").status_code == 200
    assert client.get("/segments/new").status_code == 200


def test_english_pages(client, auth, admin, people, app):
    from tests.test_ui import _switch_locale

    sid = computed(app, "Shanghai", SHANGHAI)
    auth.login()
    _switch_locale(client, "en", page="/segments")
    page = Page(_html(client.get(f"/segments/{sid}")))
    assert "Size over time" in page.texts and "Members" in page.texts
    assert "Trait" in page.texts
