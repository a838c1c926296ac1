"""The web UI: Chinese by default, English on request, navigation by role, pages and error pages."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from flask_babel import gettext

from cdp.db import db, utcnow
from cdp.models import Event, JobRun, Profile, Source
from tests.conftest import csrf_token_from, make_user

# Every area of the navigation frame, in order, as an admin sees it.
NAV_ZH = {
    "/": "工作台",
    "/profiles": "用户档案",
    "/segments": "人群分组",
    "/journeys": "旅程",
    "/content": "内容",
    "/loyalty": "会员积分",
    "/doctors": "医生",
    "/models": "模型",
    "/sources": "数据源",
    "/audit": "审计日志",
    "/privacy": "隐私",
    "/settings": "设置",
    "/system/health": "系统状态",
}
PAGES = {  # path -> the Chinese page heading
    "/": "工作台",
    "/profiles": "用户档案",
    "/profiles?kind=hcp": "用户档案",
    "/sources": "数据源",
    "/audit": "审计日志",
    "/settings": "设置",
    "/system/health": "系统状态",
    "/segments": "人群分组",
    "/journeys": "旅程",
    "/content": "内容",
    "/loyalty": "会员积分",
    "/models": "模型",
}


class Page(HTMLParser):
    """What the tests look at in a page: nav links, asset URLs, the heading and the text."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.nav: list[tuple[str, str]] = []
        self.urls: list[str] = []
        self.texts: list[str] = []
        self.heading = ""
        self._in_nav = False
        self._href: str | None = None
        self._in_h1 = False
        self._in_code = 0
        self.code: set[str] = set()  # text in <code>: identifiers and field names, not words
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("src", "href", "action", "srcset", "poster", "data"):
            if attrs.get(name):
                self.urls.append(attrs[name])
        if attrs.get("aria-label"):
            self.texts.append(attrs["aria-label"].strip())
        if tag == "nav" and "sidebar" in (attrs.get("class") or "").split():
            self._in_nav = True
        elif tag == "a" and self._in_nav:
            self._href = attrs.get("href", "")
        elif tag == "h1":
            self._in_h1 = True
        elif tag == "code":
            self._in_code += 1

    def handle_endtag(self, tag):
        if tag == "nav":
            self._in_nav = False
        elif tag == "a":
            self._href = None
        elif tag == "h1":
            self._in_h1 = False
        elif tag == "code":
            self._in_code = max(0, self._in_code - 1)

    def handle_data(self, data):
        text = data.strip()
        if not text:
            return
        if self._in_code:
            self.code.add(text)
        self.texts.append(text)
        if self._href is not None:
            self.nav.append((self._href, text))
        if self._in_h1:
            self.heading += text


def _html(response) -> str:
    assert response.mimetype == "text/html", response.mimetype
    return response.get_data(as_text=True)


def _switch_locale(client, locale: str, page: str = "/login"):
    token = csrf_token_from(client.get(page).get_data(as_text=True))
    return client.post("/locale", data={"locale": locale, "next": page, "csrf_token": token})


@pytest.fixture
def sample_data(app, admin):
    """One row of each kind the pages list, so tables render rows and not only their headers."""
    with app.app_context():
        source = Source(id="src_ui_test", name="公众号测试", kind="wechat", created_by_id=admin)
        profile = Profile(kind="hcp", traits={"city": "上海"}, last_seen_at=utcnow())
        db.session.add_all([source, profile, Profile(kind="patient", traits={})])
        db.session.flush()
        db.session.add_all(
            [
                Event(
                    source_id=source.id,
                    message_id="m-1",
                    profile_id=profile.id,
                    type="track",
                    name="article_read",
                    timestamp=utcnow(),
                ),
                JobRun(kind="demo.seed", status="succeeded", progress=1200, total=1200),
                JobRun(kind="segments.refresh", status="failed", message="boom"),
            ]
        )
        db.session.commit()


def test_login_page_is_chinese_by_default_and_english_on_request(client):
    page = Page(_html(client.get("/login")))
    assert "登录" in page.texts
    assert "邮箱" in page.texts and "密码" in page.texts
    assert "English" in page.texts  # the switch offers the other language

    response = _switch_locale(client, "en")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login"
    html = _html(client.get("/login"))
    page = Page(html)
    assert '<html lang="en">' in html
    assert "Log in" in page.texts and "E-mail" in page.texts and "Password" in page.texts
    assert "登录" not in html
    assert "简体中文" in page.texts  # and the way back

    _switch_locale(client, "zh_CN")
    assert "登录" in Page(_html(client.get("/login"))).texts


def test_locale_switch_without_csrf_token_is_refused(client):
    response = client.post("/locale", data={"locale": "en"})
    assert response.status_code == 400
    assert "登录" in Page(_html(client.get("/login"))).texts


def test_locale_survives_login(client, auth, admin):
    _switch_locale(client, "en")
    auth.login()
    page = Page(_html(client.get("/")))
    assert page.heading == "Dashboard"
    assert ("/audit", "Audit") in page.nav


def test_dashboard_shows_every_area_in_chinese_for_admin(client, auth, admin):
    auth.login()
    html = _html(client.get("/"))
    page = Page(html)
    assert page.nav == list(NAV_ZH.items())
    assert page.heading == "工作台"
    assert '<html lang="zh-CN">' in html
    assert 'data-testid="current-user">admin@test.cn · 管理员<' in html
    assert "退出登录" in page.texts


def test_dashboard_switches_to_english(client, auth, admin):
    auth.login()
    _switch_locale(client, "en", page="/")
    page = Page(_html(client.get("/")))
    assert [label for _, label in page.nav] == [
        "Dashboard",
        "Profiles",
        "Segments",
        "Journeys",
        "Content",
        "Loyalty",
        "Doctors",
        "Models",
        "Sources",
        "Audit",
        "Privacy",
        "Settings",
        "Health",
    ]
    assert "Log out" in page.texts


def test_marketer_sees_no_audit_or_settings_and_is_refused_with_an_html_page(app, client, auth):
    make_user(app, "marketer", "marketer@test.cn")
    auth.login("marketer@test.cn")
    page = Page(_html(client.get("/")))
    hrefs = [href for href, _ in page.nav]
    assert "/audit" not in hrefs and "/settings" not in hrefs
    assert "审计日志" not in page.texts and "设置" not in page.texts
    assert "/profiles" in hrefs and "/sources" in hrefs  # but the areas of the role are there

    for path in ("/audit", "/settings"):
        response = client.get(path)
        assert response.status_code == 403
        html = _html(response)
        assert Page(html).heading == "错误 403"
        assert "您没有权限查看此页面。" in Page(html).texts
        assert "audit:view" not in html and "settings:view" not in html  # no internal detail
        assert "返回工作台" in html


def test_anonymous_user_is_sent_to_the_login_page(client):
    response = client.get("/settings")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")


@pytest.mark.parametrize("logged_in", [False, True], ids=["anonymous", "admin"])
def test_unknown_ui_route_is_an_html_404_page(client, auth, admin, logged_in):
    if logged_in:
        auth.login()
    response = client.get("/no-such-page")
    assert response.status_code == 404
    html = _html(response)
    page = Page(html)
    assert "您访问的页面不存在。" in page.texts
    assert "404" in page.texts
    assert "Not Found" not in html  # werkzeug's English name stays out of the Chinese page
    assert page.heading == ("错误 404" if logged_in else "")
    assert response.headers.get("Content-Security-Policy")


def test_api_errors_stay_json(client):
    response = client.get("/api/no-such-thing")
    assert response.status_code == 404
    assert response.is_json


@pytest.mark.parametrize("path", list(PAGES))
def test_page_renders_in_chinese_with_csp_and_only_local_assets(
    app, client, auth, sample_data, path
):
    auth.login()
    response = client.get(path)
    assert response.status_code == 200, response.get_data(as_text=True)[:2000]
    html = _html(response)
    page = Page(html)
    assert page.heading == PAGES[path]
    csp = response.headers.get("Content-Security-Policy", "")
    assert "default-src 'self'" in csp
    assert "script-src 'self'" in csp
    external = [url for url in page.urls if url.lower().startswith(("http:", "https:", "//"))]
    assert not external, f"external asset URLs on {path}: {external}"
    assert "/static/css/app.css" in page.urls
    # Nothing left in English: no text node is an English source string of the catalog.
    with app.test_request_context("/"):
        leftovers = [t for t in page.texts if t.isascii() and gettext(t) != t]
    assert not leftovers, f"untranslated text on {path}: {leftovers}"


def test_pages_show_the_sample_rows(client, auth, sample_data):
    auth.login()
    dashboard = _html(client.get("/"))
    assert 'data-testid="doctors">1<' in dashboard and 'data-testid="patients">1<' in dashboard
    assert "微信公众号" in dashboard  # events by channel, translated
    assert "失败" in dashboard and "成功" in dashboard  # job statuses
    doctors = Page(_html(client.get("/profiles?kind=hcp")))
    assert "上海" in doctors.texts
    assert doctors.texts.count("医生") == 3 and doctors.texts.count("患者") == 1  # tab + row, tab
    sources = Page(_html(client.get("/sources")))
    assert "公众号测试" in sources.texts and "已启用" in sources.texts
    settings = Page(_html(client.get("/settings")))
    assert "admin@test.cn" in settings.texts and "管理员" in settings.texts
    audit = Page(_html(client.get("/audit")))
    assert "哈希链完整，审计日志未被篡改。" in audit.texts


def test_health_page_reports_the_database(client, auth, admin):
    auth.login()
    html = _html(client.get("/system/health"))
    assert 'data-testid="check-database">正常<' in html


def test_empty_states_render_commands_as_code(client, auth, admin):
    auth.login()
    sources = _html(client.get("/sources"))
    assert "暂无数据源，请使用 <code>cdp sources create</code> 命令创建。" in sources
    settings = _html(client.get("/settings"))
    assert "<code>cdp users create --email E --role R</code>" in settings
    assert "&lt;code&gt;" not in sources + settings
