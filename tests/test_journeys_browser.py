"""The journey builder in headless Chromium: the graph, a step form, live validation, save."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from cdp.actors import SYSTEM
from cdp.db import db
from journeys import service
from journeys.models import Journey, JourneyStepLog
from tests import test_browser
from tests.conftest import TEST_PASSWORD
from tests.test_journeys_ui import VALID, people_through

pytestmark = pytest.mark.browser
# The fixtures of the browser tests: Chromium, the app on a live server, a tab.
browser, live_server, page = test_browser.browser, test_browser.live_server, test_browser.page
_log_in = test_browser._log_in
SCREENSHOT = "/tmp/cdp-journey-builder.png"


@pytest.fixture
def journey_id(app) -> int:
    with app.app_context():
        return service.create_journey(SYSTEM, "欢迎旅程", VALID).id


def graph(page, expression: str):
    """Ask the builder's Cytoscape instance (the graph is a canvas, not DOM nodes)."""
    return page.evaluate(f"() => {{ const cy = window.journeyBuilder.cy; return {expression}; }}")


def click_node(page, step_id: str) -> None:
    """Click a step where the canvas draws it."""
    box = page.locator("#jb-graph").bounding_box()
    point = graph(page, f"cy.getElementById('s:{step_id}').renderedPosition()")
    page.mouse.click(box["x"] + point["x"], box["y"] + point["y"])


def definition(page) -> dict:
    return json.loads(page.input_value("#jb-definition"))


def test_open_the_builder_edit_a_step_watch_validation_and_save(app, page, live_server, journey_id):
    _log_in(page, TEST_PASSWORD)
    page.goto(f"/journeys/{journey_id}")
    assert page.inner_text("h1") == "欢迎旅程"
    expect(page.locator("#jb-graph")).to_be_visible()  # the script took over
    assert not page.locator("#jb-json-box").evaluate("e => e.open")  # JSON folded away
    # The trigger and one node per step, linked as the definition says.
    nodes = graph(page, "cy.nodes().map(n => n.id()).sort()")
    assert nodes == ["__trigger", "s:done", "s:tag", "s:wait"]
    edges = graph(page, "cy.edges().map(e => e.source().id() + '>' + e.target().id()).sort()")
    assert edges == ["__trigger>s:wait", "s:tag>s:done", "s:wait>s:tag"]
    assert "等待" in graph(page, "cy.getElementById('s:wait').data('label')")
    expect(page.locator("#jb-problems")).to_contain_text("没有问题")

    click_node(page, "wait")
    expect(page.locator("#jb-side-title")).to_have_text("步骤 wait")
    duration = page.locator("#jb-step-form [data-field=duration]")
    expect(duration).to_have_value("1d")

    # A broken duration: the server's validator answers with the path; the node turns red.
    duration.fill("soon")
    expect(page.locator("#jb-problems li")).to_contain_text("/steps/0/duration")
    assert graph(page, "cy.getElementById('s:wait').hasClass('problem')") is True
    assert page.is_visible("#jb-dirty")
    if page.locator("[data-testid=publish]").count():  # publishing uses the saved draft
        expect(page.locator("[data-testid=publish]")).to_be_disabled()
    duration.fill("2d")
    expect(page.locator("#jb-problems")).to_contain_text("没有问题")
    assert graph(page, "cy.getElementById('s:wait').hasClass('problem')") is False

    # Re-link: the wait goes straight to the exit, and the tagging step is left stranded.
    page.select_option("#jb-step-form [data-field=next]", "done")
    expect(page.locator("#jb-problems li")).to_contain_text("/steps/1")
    assert "s:wait>s:done" in graph(
        page, "cy.edges().map(e => e.source().id() + '>' + e.target().id())"
    )
    page.select_option("#jb-step-form [data-field=next]", "tag")
    expect(page.locator("#jb-problems")).to_contain_text("没有问题")

    # A step added from the toolbar follows the selected one... then is deleted again.
    page.select_option("[data-field=new_type]", "exit")
    page.click("[data-action=add]")
    assert graph(page, "cy.nodes().length") == 5
    expect(page.locator("#jb-side-title")).to_have_text("步骤 exit_1")
    page.click("[data-action=delete]")
    assert graph(page, "cy.nodes().length") == 4
    assert definition(page)["steps"][0] == {
        "id": "wait", "type": "wait", "label": "等一天", "duration": "2d", "next": "tag"
    }  # fmt: skip
    page.screenshot(path=SCREENSHOT, full_page=True)

    with page.expect_navigation():
        page.click("[data-testid=save]")
    expect(page.locator(".alert.ok")).to_have_text("草稿已保存。")
    assert page.problems == []  # no script errors, no CSP violations
    with app.app_context():
        saved = db.session.scalar(sa.select(Journey))
        assert saved.draft["steps"][0]["duration"] == "2d"
        assert [s["id"] for s in saved.draft["steps"]] == ["wait", "tag", "done"]


BRANCHING = {
    "audience": {"kind": "patient"},
    "trigger": {"type": "event", "event": "pos_purchase", "entry_key": "drug_code"},
    "start": "ab",
    "steps": [
        {"id": "ab", "type": "split", "paths": [
            {"percent": 90, "next": "bought", "label": "A"}, {"percent": 10, "holdout": True}]},
        {"id": "bought", "type": "wait_for_event", "event": "pos_purchase", "timeout": "7d",
         "match_entry_key": True, "next": "vip", "timeout_next": "done"},
        {"id": "vip", "type": "branch", "condition": {"type": "trait", "trait": "tier",
         "op": "equals", "value": "gold"}, "then": "tag", "else": "done"},
        {"id": "tag", "type": "update_trait", "trait": "loyal", "value": True, "next": "done"},
        {"id": "done", "type": "exit"},
    ],
}  # fmt: skip


def test_branches_splits_and_the_funnel_are_drawn(app, page, live_server):
    with app.app_context():
        journey = service.create_journey(SYSTEM, "复购", BRANCHING)
        service.publish(SYSTEM, journey.id)
        jid = journey.id
    people_through(app, jid, step="bought")
    with app.app_context():  # two of them bought again: the "event" edge counts them
        entered = db.session.scalars(
            sa.select(JourneyStepLog).where(JourneyStepLog.step_id == "bought")
        )
        db.session.add_all(
            JourneyStepLog(instance_id=log.instance_id, journey_id=jid, version_id=log.version_id,
                           step_id="bought", outcome="event")
            for log in list(entered)[:2]
        )  # fmt: skip
        db.session.commit()
    _log_in(page, TEST_PASSWORD)
    page.goto(f"/journeys/{jid}")
    expect(page.locator("#jb-problems")).to_contain_text("没有问题")
    edges = graph(page, "cy.edges().map(e => e.data('label')).filter(Boolean).sort()")
    assert edges == ["10% 保留组", "90% A", "事件 · 2", "否", "是", "超时"]
    holdout = graph(page, "cy.nodes('[kind = \"holdout\"]').length")
    assert holdout == 1
    # The funnel on the graph: people who entered the wait and are in it now.
    assert "进入 5 · 当前 1" in graph(page, "cy.getElementById('s:bought').data('label')")
    page.click("#jb-steps button[data-step=vip]")  # the list works as well as the canvas
    expect(page.locator("#jb-side-title")).to_have_text("步骤 vip")
    condition = page.locator("#jb-step-form [data-field=condition]")
    condition.fill('{"type": "trait"')  # half-typed JSON is flagged, not applied
    expect(condition).to_have_attribute("aria-invalid", "true")
    assert definition(page)["steps"][2]["condition"]["value"] == "gold"
    page.click("[data-action=settings]")
    expect(page.locator("#jb-side-title")).to_have_text("旅程设置")
    page.screenshot(path="/tmp/cdp-journey-branches.png", full_page=True)
    assert page.problems == []
