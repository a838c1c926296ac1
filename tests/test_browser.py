"""End to end in headless Chromium: log in on the Chinese login page, switch language, log out.

Runs the real app with werkzeug's server on a free port in a background thread and drives
Debian's /usr/bin/chromium through playwright's sync API (no `playwright install`). Without
Chromium the tests skip; with CDP_REQUIRE_SERVICES=1 (CI) they fail instead. CJK text needs a
CJK font on the machine (Debian: fonts-noto-cjk) or the screenshot shows boxes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest
from werkzeug.serving import make_server

from tests.conftest import TEST_PASSWORD, make_user
from tests.services import unavailable

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("CDP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-dev-shm-usage",
]
SCREENSHOT = "/tmp/cdp-dashboard.png"
EMAIL = "marketer@test.cn"
NAV_ZH = [
    "工作台",
    "用户档案",
    "人群分组",
    "旅程",
    "内容",
    "会员积分",
    "医生",
    "模型",
    "数据源",
    "系统状态",
]
NAV_EN = [
    "Dashboard",
    "Profiles",
    "Segments",
    "Journeys",
    "Content",
    "Loyalty",
    "Doctors",
    "Models",
]


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        unavailable("Chromium", f"{CHROMIUM} is missing (Debian: apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright", "the Python package is not installed")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        yield chromium
        chromium.close()


@pytest.fixture
def live_server(app) -> Iterator[str]:
    """The app served over HTTP on a free port; yields its base URL."""
    make_user(app, "marketer", EMAIL)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="cdp-live-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(
        base_url=live_server, locale="zh-CN", viewport={"width": 1280, "height": 800}
    )
    context.set_default_timeout(10_000)
    tab = context.new_page()
    problems: list[str] = []
    # CSP violations and script errors show up on the console; the UI should have none.
    tab.on("console", lambda m: m.type == "error" and problems.append(m.text))
    tab.on("pageerror", lambda e: problems.append(str(e)))
    tab.problems = problems
    yield tab
    context.close()


def _log_in(page, password: str):
    page.goto("/login")
    page.fill("#email", EMAIL)
    page.fill("#password", password)
    with page.expect_navigation():
        page.click("form[action='/login'] button[type=submit]")


def test_log_in_switch_language_and_log_out(page, live_server):
    response = page.goto("/login")
    assert response.status == 200
    assert page.get_attribute("html", "lang") == "zh-CN"
    assert page.title() == "登录 · CarePath"
    assert page.inner_text("form[action='/login'] button[type=submit]") == "登录"
    assert page.inner_text("label[for=email]") == "邮箱"

    _log_in(page, TEST_PASSWORD)
    assert page.url == f"{live_server}/"
    assert page.inner_text("h1") == "工作台"
    assert page.locator("nav.sidebar a").all_inner_texts() == NAV_ZH  # a marketer's areas
    assert EMAIL in page.inner_text("[data-testid=current-user]")
    assert "营销人员" in page.inner_text("[data-testid=current-user]")
    # The stylesheet loaded (served locally, allowed by the CSP): the sidebar is dark.
    assert page.eval_on_selector("nav.sidebar", "e => getComputedStyle(e).backgroundColor") == (
        "rgb(15, 42, 46)"
    )
    page.screenshot(path=SCREENSHOT, full_page=True)

    with page.expect_navigation():
        page.click("button[name=locale][value=en]")
    assert page.url == f"{live_server}/"
    assert page.get_attribute("html", "lang") == "en"
    assert page.inner_text("h1") == "Dashboard"
    assert page.locator("nav.sidebar a").all_inner_texts()[: len(NAV_EN)] == NAV_EN

    with page.expect_navigation():
        page.click("text=Log out")
    assert page.url == f"{live_server}/login"
    assert page.is_visible("#password")
    # The session is gone: the dashboard sends us back to the login page.
    page.goto("/")
    assert page.url.startswith(f"{live_server}/login")
    assert page.problems == []


def test_wrong_password_shows_the_generic_error(page, live_server):
    _log_in(page, "not the password")
    assert page.url == f"{live_server}/login"
    assert page.inner_text(".alert.error") == "邮箱或密码错误。"
    assert page.input_value("#email") == EMAIL  # kept, so the user only retypes the password
    assert page.input_value("#password") == ""
    assert not page.is_visible("nav.sidebar")
