"""Content UI: write a draft, submit it, review it in the queue, preview it as a profile."""

from __future__ import annotations

import sqlalchemy as sa

from cdp.actors import SYSTEM
from cdp.db import db
from cdp.ingest.pipeline import ingest
from cdp.models import AuditEntry
from cdp.models.content import ContentVersion
from cdp.sources import create_source
from tests.conftest import csrf_token_from, make_user
from tests.test_content import EXPIRES
from tests.test_ui import Page, _html


def _post(client, page_path: str, path: str, data: dict, follow=False):
    token = csrf_token_from(client.get(page_path).get_data(as_text=True))
    return client.post(path, data={**data, "csrf_token": token}, follow_redirects=follow)


DRAFT = {
    "audience": "patient",
    "product_class": "non_drug",
    "category": "service",
    "products": "",
    "therapeutic_area": "糖尿病",
    "expires_on": EXPIRES,
    "approval_code": "",
    "text": "【康护】{{ profile.name }}您好，您的{{ context.drug }}快用完了。",
}


def test_write_submit_review_and_approve_in_the_ui(app, client, auth):
    make_user(app, "marketer", "m@test.cn")
    make_user(app, "reviewer", "r@test.cn")
    auth.login("m@test.cn")
    created = _post(client, "/content", "/content", {"name": "续方提醒", "kind": "sms"})
    assert created.status_code == 302
    item_path = created.headers["Location"]
    saved = _post(client, item_path, f"{item_path}/versions/1", DRAFT, follow=True)
    assert "草稿已保存。" in _html(saved)
    page = _html(client.get(item_path))
    assert "context.drug" in page and "profile.name" in page
    submitted = _post(
        client, item_path, f"{item_path}/versions/1/submit", {"comment": "请审核"}, follow=True
    )
    assert "已提交审核。" in _html(submitted)
    auth.logout()

    auth.login("r@test.cn")
    queue = Page(_html(client.get("/content/review")))
    assert "续方提醒" in queue.texts
    no_code = _post(
        client, item_path, f"{item_path}/versions/1/approve", {"comment": ""}, follow=True
    )
    assert "approval code" in _html(no_code)  # the domain's reason is shown
    approved = _post(
        client,
        item_path,
        f"{item_path}/versions/1/approve",
        {"comment": "合规", "approval_code": "MLR-2026-7"},
        follow=True,
    )
    html = _html(approved)
    assert "已批准。" in html and "MLR-2026-7" in html
    assert "已批准的版本不可修改" in html  # frozen: no editor any more
    with app.app_context():
        assert db.session.scalar(sa.select(ContentVersion.status)) == "approved"


def test_bad_draft_fields_are_shown_next_to_the_field(app, client, auth):
    make_user(app, "marketer", "m@test.cn")
    auth.login("m@test.cn")
    item_path = _post(
        client, "/content", "/content", {"name": "x", "kind": "wechat_template"}
    ).headers["Location"]
    bad = _post(
        client,
        item_path,
        f"{item_path}/versions/1",
        {**DRAFT, "template_id": "T1", "fields": "no colon here"},
    )
    assert bad.status_code == 422
    assert 'class="field-error"' in _html(bad)


def test_preview_as_a_profile_in_the_ui_is_audited(app, client, auth):
    make_user(app, "marketer", "m@test.cn")
    with app.app_context():
        source = create_source(SYSTEM, "s", "http")[0]
        pid = ingest(
            source, [{"type": "identify", "userId": "u", "traits": {"name": "周敏"}}]
        ).profile_ids[0]
    auth.login("m@test.cn")
    item_path = _post(client, "/content", "/content", {"name": "x", "kind": "sms"}).headers[
        "Location"
    ]
    _post(client, item_path, f"{item_path}/versions/1", DRAFT)
    shown = _post(
        client,
        item_path,
        f"{item_path}/versions/1/preview",
        {"profile_id": pid, "channel": "sms", "context": "drug: 格华止"},
    )
    html = _html(shown)
    assert shown.status_code == 200
    assert "【康护】周敏您好，您的格华止快用完了。" in html
    assert "not_approved" in html  # and why it could not be sent yet
    with app.app_context():
        row = db.session.scalar(sa.select(AuditEntry).where(AuditEntry.action == "content.preview"))
        assert row.details["pii_fields"] == ["name"]


def test_roles_see_only_their_controls(app, client, auth):
    make_user(app, "analyst", "a@test.cn")
    auth.login("a@test.cn")
    assert client.get("/content").status_code == 403
    auth.logout()
    make_user(app, "reviewer", "r@test.cn")
    auth.login("r@test.cn")
    page = _html(client.get("/content"))
    assert "新建内容" not in page and "/content/review" in page
