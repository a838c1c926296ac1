"""The segment builder in headless Chromium: conditions and groups, live count, errors, save."""

from __future__ import annotations

import json
import re

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from cdp.actors import SYSTEM
from cdp.db import db
from segments.models import Segment
from tests import test_browser
from tests.conftest import TEST_PASSWORD
from tests.test_segments_membership import person, send

pytestmark = pytest.mark.browser
# The fixtures of the browser tests: Chromium, the app on a live server, a tab.
browser, live_server, page = test_browser.browser, test_browser.live_server, test_browser.page
_log_in = test_browser._log_in
SCREENSHOT = "/tmp/cdp-segment-builder.png"


@pytest.fixture
def people(app):
    from cdp.sources import create_source

    with app.app_context():
        source, _ = create_source(SYSTEM, "CRM", "http")
        send(source.id, *person("a", "上海", reads=2), *person("b", "上海"), *person("c", "北京"))


def definition(page) -> dict:
    return json.loads(page.input_value("#seg-definition"))


def test_build_a_rule_watch_the_live_count_and_save(app, page, live_server, people):
    _log_in(page, TEST_PASSWORD)
    page.goto("/segments/new")
    assert page.inner_text("h1") == "新建人群分组"
    assert page.is_visible("#seg-builder")  # the script took over from the JSON editor
    # An empty rule matches everyone.
    expect(page.locator("#seg-count")).to_have_text(re.compile(r"^3 "))

    top = page.locator("#seg-builder > .seg-group > .seg-head")
    top.get_by_role("button", name="+ 条件", exact=True).click()
    condition = page.locator(".seg-cond").first
    condition.locator("select").first.select_option("trait")
    condition = page.locator(".seg-cond").first
    condition.locator("[data-field=trait]").fill("city")
    condition.locator("[data-field=op]").select_option("equals")
    condition.locator("[data-field=value]").fill("上海")
    expect(page.locator("#seg-count")).to_have_text(re.compile(r"^2 "))
    assert definition(page) == {
        "rule": {"and": [{"type": "trait", "trait": "city", "op": "equals", "value": "上海"}]}
    }
    assert "示例" in page.inner_text("#seg-sample")

    # A group: "any of" with a purchase condition (health data: the notice appears).
    top.get_by_role("button", name="+ 条件组", exact=True).click()
    inner = page.locator(".seg-group .seg-group").first
    inner.get_by_role("button", name="+ 条件", exact=True).click()
    inner = page.locator(".seg-group .seg-group").first
    inner.locator(".seg-cond select").first.select_option("event_count")
    expect(page.locator("#seg-health")).to_be_visible()
    assert definition(page)["rule"]["and"][1] == {
        "or": [
            {
                "type": "event_count",
                "event": "pos_purchase",
                "where": [
                    {
                        "property": "items",
                        "any": [{"property": "rx", "op": "equals", "value": False}],
                    }
                ],
                "within": {"last_days": 90},
                "op": "gte",
                "value": 2,
            }
        ]
    }
    expect(page.locator("#seg-count")).to_have_text(re.compile(r"^0 "))

    # A broken value is reported with its path, from the server's validation.
    inner.locator("[data-field=op]").select_option("between")
    page.wait_for_selector("#seg-errors li")
    assert "/rule/and/1/or/0/value" in page.inner_text("#seg-errors")
    inner.locator("[data-field=value]").fill("0, 5")
    expect(page.locator("#seg-errors")).to_have_text("")
    page.screenshot(path=SCREENSHOT, full_page=True)

    page.fill("input[name=name]", "上海或买药")
    with page.expect_navigation():
        page.click("button:has-text('保存人群分组')")
    assert page.inner_text("h1") == "上海或买药"
    assert page.problems == []
    with app.app_context():
        saved = db.session.scalar(sa.select(Segment))
        assert saved.health_data is True
        assert saved.definition == definition_after_save(saved.definition)


def definition_after_save(saved: dict) -> dict:
    """The builder's JSON is saved as it was (between [0, 5] in the inner condition)."""
    assert saved["rule"]["and"][1]["or"][0]["value"] == [0, 5]
    return saved
