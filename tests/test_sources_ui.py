"""Sources in the web UI: per-kind option fields, write-only secrets, editing, and source health."""

from __future__ import annotations

import re

import orjson
import pytest
import sqlalchemy as sa

from cdp.actors import SYSTEM
from cdp.db import db
from cdp.models import AuditEntry, JobRun, Source
from cdp.sources import create_source, get_source, source_options
from connectors import wechat_api, wechat_pull
from connectors.models import ConnectorCursor
from connectors.wechat_api import WechatClient
from tests import test_browser
from tests.conftest import TEST_PASSWORD, csrf_token_from, make_user
from tests.test_connector_wechat import APP_ID, OPENID, event_xml, plain_query
from tests.test_connector_wechat_pull import Stub
from tests.test_profiles_ui import untranslated
from tests.test_ui import Page, _html

TOKEN = "Tok3nAbc"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
APP_SECRET = "wx-app-secret-0042"
POS_SECRET = "pos-shared-secret-7781"
# Chromium and the app on a live server, for the one browser test.
browser, live_server = test_browser.browser, test_browser.live_server


@pytest.fixture
def admin_client(client, auth, admin):
    auth.login()
    return client


def post_source(client, **fields):
    token = csrf_token_from(_html(client.get("/sources")))
    data = {"csrf_token": token, "default_profile_kind": "patient", **fields}
    return client.post("/sources", data=data)


def the_source(app) -> Source:
    with app.app_context():
        source = db.session.scalar(sa.select(Source))
        db.session.expunge(source)
        return source


def options_of(app, source_id: str) -> dict:
    with app.app_context():
        return source_options(get_source(source_id))


def field_html(html: str, name: str) -> str:
    """The <label> that holds the input or select called ``name``."""
    at = html.index(f'name="{name}"')
    return html[html.rindex("<label", 0, at) : html.index("</label>", at)]


def test_the_form_has_each_kinds_options_grouped_with_secrets_as_password_fields(app, admin_client):
    html = _html(admin_client.get("/sources"))
    for kind in ("wechat", "miniprogram", "pos", "ecommerce", "sms"):
        assert f'data-kind="{kind}"' in html
    for name in ("wechat-app_id", "wechat-api_base", "miniprogram-app_id", "pos-partner"):
        assert re.search(rf'<input[^>]*name="{name}"[^>]*type="text"', html), name
    for name in ("wechat-token", "wechat-aes_key", "wechat-app_secret", "miniprogram-app_secret",
                 "pos-secret", "ecommerce-secret", "sms-callback_token"):  # fmt: skip
        assert re.search(rf'<input[^>]*name="{name}"[^>]*type="password"', html), name
    platform = field_html(html, "ecommerce-platform")
    assert "<select" in platform and "有赞" in platform and "京东" in platform
    assert "/static/js/source-form.js" in html
    # Without JavaScript all groups show and say which kind they belong to.
    assert "选项：微信公众号" in Page(html).texts
    assert not untranslated(app, Page(html))


def test_creating_a_wechat_source_stores_what_the_cli_stores_and_shows_its_url_once(
    app, admin_client, runner
):
    response = post_source(
        admin_client,
        name="康护健康 服务号",
        kind="wechat",
        **{
            "wechat-app_id": APP_ID,
            "wechat-token": TOKEN,
            "wechat-aes_key": AES_KEY,
            "wechat-app_secret": APP_SECRET,
            "wechat-sync_followers": "false",
            "wechat-sync_interval_hours": "12",
            "pos-partner": "ignored",  # another kind's field: not this source's option
        },
    )
    assert response.status_code == 200
    html = _html(response)
    source = the_source(app)
    assert f"http://127.0.0.1:5000/connectors/wechat/{source.id}" in html
    created = Page(html)
    assert "数据源已创建。" in created.texts and "aes_key" in created.texts
    for secret in (TOKEN, AES_KEY, APP_SECRET):
        assert secret not in html
    cli = runner.invoke(
        args=["sources", "create", "--name", "x", "--kind", "wechat", "--json"]
        + [f"--option={o}" for o in (f"app_id={APP_ID}", f"token={TOKEN}", f"aes_key={AES_KEY}",
           f"app_secret={APP_SECRET}", "sync_followers=false", "sync_interval_hours=12")]
    )  # fmt: skip
    assert cli.exit_code == 0, cli.output
    assert options_of(app, source.id) == options_of(app, orjson.loads(cli.output)["id"])
    with app.app_context():
        raw = db.session.get(Source, source.id).options_encrypted
    assert APP_SECRET.encode() not in raw and b"app_id" not in raw
    detail = _html(admin_client.get(f"/sources/{source.id}"))
    assert "数据源已创建。" not in Page(detail).texts and APP_SECRET not in detail
    assert not untranslated(app, created)


@pytest.mark.parametrize(
    ("fields", "field", "hidden"),
    [
        ({"kind": "pos", "pos-partner": "DFYF", "pos-secret": "short-pw"}, "pos-secret", "short-pw"),
        ({"kind": "wechat", "wechat-app_id": APP_ID}, "wechat-token", None),
        ({"kind": "ecommerce", "ecommerce-platform": "amazon", "ecommerce-secret": "s" * 12},
         "ecommerce-platform", None),
        ({"kind": "wechat", "wechat-app_id": APP_ID, "wechat-token": TOKEN,
          "wechat-sync_interval_hours": "soon"}, "wechat-sync_interval_hours", None),
    ],
    ids=["secret-too-short", "required-missing", "not-a-platform", "not-a-number"],
)  # fmt: skip
def test_the_kinds_schema_errors_show_next_to_the_field_and_nothing_is_stored(
    app, admin_client, fields, field, hidden
):
    response = post_source(admin_client, name="坏数据源", **fields)
    assert response.status_code == 422
    html = _html(response)
    assert "field-error" in field_html(html, field)
    if hidden:  # a secret is never echoed, neither in the field nor in the message
        assert hidden not in html
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Source)) == 0


def test_editing_keeps_blank_secrets_and_never_shows_them(app, admin_client):
    with app.app_context():
        source, _ = create_source(SYSTEM, "大参林", "pos", {"partner": "DSL", "secret": POS_SECRET})
        source_id = source.id
    page = _html(admin_client.get(f"/sources/{source_id}/edit"))
    assert POS_SECRET not in page and "已设置，留空则保持不变。" in Page(page).texts
    assert 'value="DSL"' in field_html(page, "pos-partner")
    token = csrf_token_from(page)
    form = {"csrf_token": token, "name": "大参林 POS", "default_profile_kind": "patient",
            "enabled": "y", "pos-partner": "DSL2", "pos-secret": ""}  # fmt: skip
    response = admin_client.post(f"/sources/{source_id}/edit", data=form)
    assert response.status_code == 302
    assert options_of(app, source_id) == {"partner": "DSL2", "secret": POS_SECRET}
    saved = Page(_html(admin_client.get(response.headers["Location"])))
    assert "数据源已保存。" in saved.texts and saved.heading == "大参林 POS"
    bad = admin_client.post(f"/sources/{source_id}/edit", data={**form, "pos-secret": "tiny"})
    assert bad.status_code == 422 and "field-error" in field_html(_html(bad), "pos-secret")
    new_secret = "a-new-secret-of-24-chars"
    admin_client.post(f"/sources/{source_id}/edit", data={**form, "pos-secret": new_secret})
    assert options_of(app, source_id)["secret"] == new_secret
    admin_client.post(f"/sources/{source_id}/edit", data={**form, "enabled": ""})
    with app.app_context():
        assert get_source(source_id).enabled is False
        details = db.session.scalars(
            sa.select(AuditEntry.details).where(AuditEntry.action == "source.update")
        ).all()
    assert len(details) == 3 and POS_SECRET not in str(details) and new_secret not in str(details)
    assert details[1]["options_changed"] == ["secret"]
    row = _html(admin_client.get("/sources")).split(f'data-testid="source-{source_id}"')[1]
    assert 'data-status="disabled"' in row.split("</tr>")[0]


def test_health_shows_refusals_with_masked_payloads_and_pull_cursors(app, admin_client):
    with app.app_context():
        source, _ = create_source(
            SYSTEM, "服务号", "wechat", {"app_id": APP_ID, "token": TOKEN, "app_secret": "s"}
        )
        source_id = source.id
    listing = _html(admin_client.get("/sources"))
    assert 'data-status="waiting"' in listing  # nothing received yet
    url = f"/connectors/wechat/{source_id}"
    bad = {**plain_query(token=TOKEN), "signature": "0" * 40}
    assert admin_client.post(url, query_string=bad, data=event_xml("CLICK")).status_code == 403
    row = _html(admin_client.get("/sources")).split(f'data-testid="source-{source_id}"')[1]
    row = row.split("</tr>")[0]
    assert 'data-status="failing"' in row and 'data-testid="errors"><span class="bad">1<' in row
    good = plain_query(token=TOKEN)
    assert admin_client.post(url, query_string=good, data=event_xml("CLICK")).status_code == 200
    with app.app_context():
        db.session.add(
            ConnectorCursor(
                source_id=source_id,
                name="followers",
                status="paused",
                position={"page_openid": OPENID, "offset": 200},
                runs=3,
                last_error="errcode 45009: api freq out of limit",
            )
        )
        db.session.commit()
    html = _html(admin_client.get(f"/sources/{source_id}"))
    page = Page(html)
    assert 'data-status="warning"' in html  # a refusal today and a paused pull
    assert "signature does not match (token, timestamp, nonce)" in page.texts
    assert "&lt;MsgType&gt;" in html and OPENID not in html  # payload shown, the openid masked
    assert "微信粉丝同步" in page.texts and "已暂停" in page.texts and "offset=200" in page.texts
    assert 'data-testid="events-recent">1 / 1<' in html
    assert not untranslated(app, page)


def test_marketer_sees_health_but_no_edit(app, client, auth, admin):
    with app.app_context():
        source_id = create_source(SYSTEM, "门店", "pos", {"partner": "P1", "secret": POS_SECRET})[
            0
        ].id
    make_user(app, "marketer", "marketer@test.cn")
    auth.login("marketer@test.cn")
    html = _html(client.get(f"/sources/{source_id}"))
    assert 'data-testid="health"' in html and 'data-testid="edit-source"' not in html
    assert client.get(f"/sources/{source_id}/edit").status_code == 403
    token = csrf_token_from(html)
    edit = {"csrf_token": token, "name": "x", "default_profile_kind": "patient"}
    assert client.post(f"/sources/{source_id}/edit", data=edit).status_code == 403
    with app.app_context():
        assert get_source(source_id).name == "门店"


def text_of_testid(html: str, testid: str) -> str:
    return re.search(rf'data-testid="{testid}"[^>]*>([^<]*)<', html).group(1).strip()


@pytest.fixture
def followers_stub(httpserver, monkeypatch):
    """The WeChat API on a local server (twelve followers), with no back-off sleeps."""
    Stub().install(httpserver)
    monkeypatch.setattr(wechat_pull, "PAGE_SIZE", 5)  # the stub's page size

    def client(*args, **kwargs):
        kwargs.update(sleep=lambda seconds: None, timeout=0.25, rate_per_second=0)
        return WechatClient(*args, **kwargs)

    monkeypatch.setattr(wechat_pull, "client_factory", client)
    wechat_api.forget_tokens()
    yield httpserver
    wechat_api.forget_tokens()


def test_sync_now_queues_an_audited_pull_and_the_page_follows_the_job(
    app, client, auth, admin, followers_stub
):
    options = {"app_id": APP_ID, "token": TOKEN, "app_secret": APP_SECRET}
    options["api_base"] = followers_stub.url_for("").rstrip("/")
    with app.app_context():
        source_id = create_source(SYSTEM, "服务号", "wechat", options)[0].id
        pos_id = create_source(SYSTEM, "门店", "pos", {"partner": "DFYF", "secret": POS_SECRET})[
            0
        ].id
    auth.login()
    page = _html(client.get(f"/sources/{source_id}"))
    assert 'data-testid="sync-now"' in page and 'data-testid="sync-job"' not in page
    assert 'data-testid="sync"' not in _html(client.get(f"/sources/{pos_id}"))  # pushed to
    assert client.post(f"/sources/{source_id}/sync").status_code == 400  # no CSRF token
    token = csrf_token_from(page)
    response = client.post(f"/sources/{source_id}/sync", data={"csrf_token": token})
    assert response.status_code == 302 and response.location.endswith(f"/sources/{source_id}#sync")
    with app.app_context():
        job = db.session.scalar(sa.select(JobRun))
        entry = db.session.scalar(sa.select(AuditEntry).where(AuditEntry.action == "source.sync"))
        assert (job.kind, job.status, job.params) == (
            "wechat_follower_sync",
            "queued",
            {"source_id": source_id},
        )
        assert (entry.object_id, entry.actor_id, entry.details["job_id"]) == (
            source_id,
            str(admin),
            job.id,
        )
    queued = _html(client.get(f"/sources/{source_id}"))
    assert f"同步已排队，任务编号 {job.id}。" in Page(queued).texts
    assert text_of_testid(queued, "sync-status") == "排队中"
    assert re.search(r'data-testid="sync-now" disabled', queued)  # one run at a time
    assert not untranslated(app, Page(queued))
    with app.app_context():  # what the worker does with the queued job
        assert wechat_pull.sync_followers(source_id, job.id)["status"] == "done"
    done = _html(client.get(f"/sources/{source_id}"))
    assert text_of_testid(done, "sync-status") == "成功"
    assert text_of_testid(done, "sync-progress") == "12 / 12"
    assert re.search(r'data-testid="sync-now" >', done)  # a finished run may be followed by another
    refused = client.post(f"/sources/{pos_id}/sync", data={"csrf_token": token})
    assert refused.status_code == 302
    assert "无法同步此数据源" in _html(client.get(f"/sources/{pos_id}"))
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(JobRun)) == 1


def test_sync_now_needs_permission_to_edit_sources(app, client, auth, followers_stub):
    options = {"app_id": APP_ID, "token": TOKEN, "app_secret": APP_SECRET, "api_base": "http://x"}
    with app.app_context():
        source_id = create_source(SYSTEM, "服务号", "wechat", options)[0].id
    make_user(app, "marketer")
    auth.login("marketer@test.cn")
    html = _html(client.get(f"/sources/{source_id}"))
    assert 'data-testid="sync"' in html and 'data-testid="sync-now"' not in html
    response = client.post(f"/sources/{source_id}/sync", data={"csrf_token": csrf_token_from(html)})
    assert response.status_code == 403
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(JobRun)) == 0


@pytest.mark.browser
def test_the_form_shows_only_the_chosen_kinds_options_in_a_browser(app, browser, live_server):
    make_user(app, "admin", "admin@test.cn")
    context = browser.new_context(base_url=live_server, locale="zh-CN")
    page = context.new_page()
    problems = []
    page.on("console", lambda m: m.type == "error" and problems.append(m.text))
    page.goto("/login")
    page.fill("#email", "admin@test.cn")
    page.fill("#password", TEST_PASSWORD)
    with page.expect_navigation():
        page.click("form[action='/login'] button[type=submit]")
    page.goto("/sources")
    page.select_option("select[name=kind]", "pos")
    assert page.is_visible("fieldset[data-kind=pos]")
    assert not page.is_visible("fieldset[data-kind=wechat]")
    page.select_option("select[name=kind]", "wechat")
    assert page.is_visible("input[name=wechat-aes_key]")
    assert not page.is_visible("input[name=pos-secret]")
    page.fill("input[name=name]", "服务号")
    page.fill("input[name=wechat-app_id]", APP_ID)
    page.fill("input[name=wechat-token]", TOKEN)
    page.screenshot(path="/tmp/cdp-source-form.png", full_page=True)
    with page.expect_navigation():
        page.click("form[data-source-form] button[type=submit]")
    assert "/connectors/wechat/src_" in page.inner_text("[data-testid=endpoints]")
    assert options_of(app, the_source(app).id) == {"app_id": APP_ID, "token": TOKEN}
    assert not problems
    context.close()
