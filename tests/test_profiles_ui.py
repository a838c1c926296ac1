"""Profiles and sources in the web UI: search, the 360° page, audited reveal, undo, write keys."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from flask_babel import gettext

from cdp.actors import SYSTEM
from cdp.db import db
from cdp.ingest.pipeline import ingest
from cdp.models import AuditEntry, Merge, Profile, Source
from cdp.sources import create_source, get_source, source_for_write_key
from tests.conftest import csrf_token_from, make_user
from tests.test_ui import Page, _html

T0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
PHONE = "13800139001"
WRITE_KEY = re.compile(r"wk_[A-Za-z0-9_-]{30,}")


def at(minutes: int) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


@pytest.fixture
def source_id(app):
    with app.app_context():
        source, _ = create_source(SYSTEM, "患者服务号", "http")
        return source.id


def send(app, source_id: str, *messages: dict):
    with app.app_context():
        return ingest(get_source(source_id), list(messages))


@pytest.fixture
def patient(app, source_id) -> int:
    send(
        app,
        source_id,
        {
            "type": "identify",
            "userId": "member-7",
            "traits": {"phone": PHONE, "name": "李娜", "city": "上海"},
            "timestamp": at(0),
        },
        {"type": "track", "userId": "member-7", "event": "article_read", "timestamp": at(5)},
        {"type": "track", "userId": "member-7", "event": "coupon_redeemed", "timestamp": at(9)},
    )
    with app.app_context():
        return db.session.scalar(sa.select(Profile.id))


@pytest.fixture
def merged_pair(app, source_id) -> tuple[int, int]:
    send(app, source_id, {"type": "identify", "anonymousId": "a1", "traits": {"phone": PHONE}})
    send(app, source_id, {"type": "identify", "userId": "m7", "traits": {"name": "李娜"}})
    send(app, source_id, {"type": "identify", "userId": "m7", "traits": {"phone": PHONE}})
    with app.app_context():
        merge = db.session.scalar(sa.select(Merge))
        return merge.survivor_id, merge.merged_id


@pytest.fixture
def as_marketer(app, client, auth):
    make_user(app, "marketer", "marketer@test.cn")
    auth.login("marketer@test.cn")


def audit_actions(app) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(sa.select(AuditEntry.action).order_by(AuditEntry.id)))


def untranslated(app, page: Page) -> list[str]:
    with app.test_request_context("/"):
        return [t for t in page.texts if t.isascii() and gettext(t) != t and t not in page.code]


def search(client, query: str, kind: str = "") -> str:
    token = csrf_token_from(client.get("/profiles").get_data(as_text=True))
    response = client.post("/profiles", data={"q": query, "kind": kind, "csrf_token": token})
    assert response.status_code == 200
    return _html(response)


def results(html: str) -> str:
    return html[html.index("<table") :]


def test_search_finds_a_profile_by_phone_and_lists_no_personal_data(
    app, client, auth, admin, patient
):
    auth.login()
    html = search(client, "138 0013 9001")
    page = Page(html)
    assert page.heading == "用户档案"
    assert f'href="/profiles/{patient}"' in results(html)
    assert "李娜" not in html and "9001" not in results(html)
    assert "手机号" in page.texts and "上海" in page.texts  # identifier types, plain traits
    assert f'href="/profiles/{patient}"' in search(client, "李娜")
    assert f'href="/profiles/{patient}"' in search(client, str(patient))
    assert "没有符合搜索条件的档案。" in Page(search(client, "王伟")).texts
    assert f'href="/profiles/{patient}"' not in search(client, PHONE, kind="hcp")
    # A search is a POST with a CSRF token: phone numbers never end up in URLs or access logs.
    assert client.post("/profiles", data={"q": PHONE}).status_code == 400
    token = csrf_token_from(html)
    assert client.post("/profiles", data={"q": " ", "csrf_token": token}).status_code == 302
    assert "9001" not in results(_html(client.get(f"/profiles?q={PHONE}")))


def test_360_page_shows_traits_masked_identifiers_and_timeline_in_chinese(
    app, client, auth, admin, patient
):
    auth.login()
    response = client.get(f"/profiles/{patient}")
    assert response.status_code == 200
    html = _html(response)
    page = Page(html)
    assert page.heading == f"档案 #{patient}"
    assert ("/profiles", "用户档案") in page.nav
    assert "跨渠道时间线" in page.texts and "合并记录" in page.texts
    assert "城市" in page.texts and "上海" in page.texts
    assert "+86138****9001" in page.texts and PHONE not in html and "李娜" not in html
    timeline = html[html.index('data-testid="timeline"') :]
    assert timeline.index("coupon_redeemed") < timeline.index("article_read")  # newest first
    assert timeline.index("article_read") < timeline.index("身份识别")
    assert page.texts.count("HTTP 埋点接口") == 3  # the channel of each event, translated
    assert "显示个人信息" in page.texts  # admin may reveal
    assert not untranslated(app, page)


def test_timeline_pages_through_every_event_once(app, client, auth, admin, source_id):
    send(
        app,
        source_id,
        *[
            {"type": "track", "userId": "u", "event": f"ev{i:02d}", "timestamp": at(i)}
            for i in range(34)
        ],
    )
    with app.app_context():
        profile_id = db.session.scalar(sa.select(Profile.id))
    auth.login()
    seen, url = [], f"/profiles/{profile_id}"
    while url:
        html = _html(client.get(url))
        seen += re.findall(r"<strong>(ev\d\d)</strong>", html)
        more = re.search(r'href="([^"]+before=[^"]+)"', html)
        url = more.group(1).replace("&amp;", "&") if more else None
    assert seen == [f"ev{i:02d}" for i in reversed(range(34))]
    assert client.get(f"/profiles/{profile_id}?before=nonsense").status_code == 422


def test_admin_reveals_personal_data_by_post_with_csrf_and_it_is_audited(
    app, client, auth, admin, patient
):
    auth.login()
    html = _html(client.get(f"/profiles/{patient}"))
    assert client.post(f"/profiles/{patient}/reveal").status_code == 400  # no CSRF token
    assert "profile.pii_view" not in audit_actions(app)
    response = client.post(
        f"/profiles/{patient}/reveal", data={"csrf_token": csrf_token_from(html)}
    )
    assert response.status_code == 200
    page = Page(_html(response))
    assert "李娜" in page.texts and "+8613800139001" in page.texts
    assert "姓名" in page.texts and "个人信息" in page.texts
    assert "个人信息仅在本页显示，本次查看已记入审计日志。" in page.texts
    assert audit_actions(app)[-1] == "profile.pii_view"
    assert "李娜" not in _html(client.get(f"/profiles/{patient}"))  # masked again afterwards


def test_marketer_has_no_reveal_or_undo_and_is_refused(app, client, as_marketer, merged_pair):
    survivor, _ = merged_pair
    html = _html(client.get(f"/profiles/{survivor}"))
    page = Page(html)
    assert "合并记录" in page.texts and "生效中" in page.texts
    assert "撤销合并" not in html and "显示个人信息" not in html
    token = csrf_token_from(html)
    assert (
        client.post(f"/profiles/{survivor}/reveal", data={"csrf_token": token}).status_code == 403
    )
    with app.app_context():
        merge_id = db.session.scalar(sa.select(Merge.id))
    refused = client.post(
        f"/profiles/{survivor}/unmerge", data={"csrf_token": token, "merge_id": merge_id}
    )
    assert refused.status_code == 403
    assert not {"profile.pii_view", "profile.unmerge"} & set(audit_actions(app))


def test_admin_undoes_a_merge_from_the_360_page(app, client, auth, admin, merged_pair):
    survivor, merged = merged_pair
    auth.login()
    moved = client.get(f"/profiles/{merged}")
    assert moved.status_code == 302 and moved.headers["Location"] == f"/profiles/{survivor}"
    html = _html(client.get(moved.headers["Location"]))
    page = Page(html)
    assert f"档案 #{merged} 已合并到档案 #{survivor}。" in page.texts
    assert "撤销合并" in page.texts
    with app.app_context():
        merge_id = db.session.scalar(sa.select(Merge.id))
    token = csrf_token_from(html)
    assert (
        client.post(f"/profiles/{survivor}/unmerge", data={"merge_id": merge_id}).status_code == 400
    )
    done = client.post(
        f"/profiles/{survivor}/unmerge", data={"csrf_token": token, "merge_id": merge_id}
    )
    assert done.status_code == 302
    page = Page(_html(client.get(done.headers["Location"])))
    assert f"已撤销合并：档案 #{merged} 已恢复。" in page.texts
    assert "撤销合并" not in page.texts  # the merge is undone; nothing left to undo
    with app.app_context():
        assert db.session.get(Profile, merged).merged_into_id is None
    assert "profile.unmerge" in audit_actions(app)
    again = client.post(
        f"/profiles/{survivor}/unmerge", data={"csrf_token": token, "merge_id": merge_id}
    )
    assert (
        "无法撤销此次合并：它已被撤销，或之后的合并依赖于它。"
        in Page(_html(client.get(again.headers["Location"]))).texts
    )


def test_create_source_shows_the_write_key_once_and_the_list_shows_counts(app, client, auth, admin):
    auth.login()
    html = _html(client.get("/sources"))
    assert "新建数据源" in Page(html).texts
    token = csrf_token_from(html)
    bad = client.post("/sources", data={"csrf_token": token, "name": "", "kind": "http"})
    assert bad.status_code == 422
    response = client.post(
        "/sources",
        data={
            "csrf_token": token,
            "name": "医生小程序",
            "kind": "http",
            "default_profile_kind": "hcp",
        },
    )
    assert response.status_code == 200
    created = _html(response)
    keys = WRITE_KEY.findall(created)
    assert len(set(keys)) == 1 and "写入密钥（仅显示这一次）：" in Page(created).texts
    with app.app_context():
        source = source_for_write_key(keys[0])
        assert source.name == "医生小程序" and source.default_profile_kind == "hcp"
        source_id = source.id
    send(
        app,
        source_id,
        {"type": "track", "userId": "d1", "event": "a"},
        {"type": "track", "userId": "d1", "event": "b"},
        {"type": "track", "userId": "d1", "messageId": "bad-1"},
    )
    listing = _html(client.get("/sources"))
    assert not WRITE_KEY.search(listing)  # shown once, never again
    row = listing[listing.index(f'data-testid="source-{source_id}"') :].split("</tr>")[0]
    assert 'data-testid="events">2<' in row and ">1</a>" in row and "医生" in row
    detail = Page(_html(client.get(f"/sources/{source_id}")))
    assert detail.heading == "医生小程序"
    assert "event" in detail.texts and "bad-1" in detail.texts and "已拒绝" in detail.texts
    assert not untranslated(app, detail)


def test_rotating_the_key_in_the_ui_retires_the_old_one(app, client, auth, admin):
    with app.app_context():
        source, old_key = create_source(SYSTEM, "官网", "http")
        source_id = source.id
    auth.login()
    html = _html(client.get(f"/sources/{source_id}"))
    assert "轮换写入密钥" in Page(html).texts
    response = client.post(
        f"/sources/{source_id}/rotate-key", data={"csrf_token": csrf_token_from(html)}
    )
    assert response.status_code == 200
    new_key = WRITE_KEY.search(_html(response)).group(0)
    assert new_key != old_key
    with app.app_context():
        assert source_for_write_key(old_key) is None
        assert source_for_write_key(new_key).id == source_id
    assert not WRITE_KEY.search(_html(client.get(f"/sources/{source_id}")))


def test_marketer_sees_sources_but_cannot_create_or_rotate(app, client, as_marketer, source_id):
    html = _html(client.get("/sources"))
    assert "患者服务号" in Page(html).texts and "新建数据源" not in html
    token = csrf_token_from(html)
    assert (
        client.post("/sources", data={"csrf_token": token, "name": "x", "kind": "http"}).status_code
        == 403
    )
    assert "轮换写入密钥" not in _html(client.get(f"/sources/{source_id}"))
    assert (
        client.post(f"/sources/{source_id}/rotate-key", data={"csrf_token": token}).status_code
        == 403
    )
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Source)) == 1


def test_audit_page_translates_actor_types_and_outcomes(app, client, auth, admin):
    auth.login(password="wrong password!")  # an anonymous, denied login attempt
    auth.login()
    page = Page(_html(client.get("/audit")))
    assert "匿名" in page.texts and "已拒绝" in page.texts
    assert "成功" in page.texts
    assert "denied" not in page.texts and "anonymous" not in page.texts
