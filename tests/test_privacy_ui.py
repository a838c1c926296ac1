"""Privacy UI: the requests page (export download, erasure status), retention, consent panel."""

from __future__ import annotations

import sqlalchemy as sa
from flask import render_template_string
from flask_login import login_user

from cdp.actors import SYSTEM
from cdp.consent import has_consent
from cdp.db import db
from cdp.ingest.pipeline import ingest
from cdp.models import Profile, User
from cdp.models.privacy import PrivacyRequest
from cdp.privacy.erasure import run_erasure
from cdp.sources import create_source
from tests.conftest import csrf_token_from, make_user
from tests.test_ui import Page, _html
from web.session_auth import SessionUser


def person(app, **traits) -> int:
    with app.app_context():
        source = create_source(SYSTEM, "s", "http")[0]
        return ingest(source, [{"type": "identify", "userId": "u", "traits": traits}]).profile_ids[
            0
        ]


def _post(client, path: str, data: dict, page="/privacy", follow=False):
    token = csrf_token_from(client.get(page).get_data(as_text=True))
    return client.post(path, data={**data, "csrf_token": token}, follow_redirects=follow)


def test_export_and_erase_from_the_privacy_page(app, client, auth, admin):
    pid = person(app, name="郑爽")
    auth.login()
    page = Page(_html(client.get("/privacy")))
    assert page.heading == "隐私"
    download = _post(client, "/privacy/export", {"profile_id": pid, "format": "json"})
    assert download.status_code == 200 and download.mimetype == "application/json"
    assert "郑爽" in download.get_data(as_text=True)
    refused = _post(client, "/privacy/erase", {"profile_id": pid, "reason": "申请"})
    assert refused.status_code == 422  # the confirmation box was not ticked
    queued = _post(
        client, "/privacy/erase", {"profile_id": pid, "reason": "申请", "confirm": "y"}, follow=True
    )
    assert "已加入队列" in _html(queued)
    with app.app_context():
        request_id = db.session.scalar(
            sa.select(PrivacyRequest.id).where(PrivacyRequest.kind == "erasure")
        )
        run_erasure(request_id)
    html = _html(client.get("/privacy"))
    assert "已完成" in html and "郑爽" not in html
    with app.app_context():
        assert db.session.get(Profile, pid) is None


def test_retention_rules_on_the_privacy_page(app, client, auth, admin):
    auth.login()
    saved = _post(
        client, "/privacy/retention", {"event_name": "page_view", "days": "90"}, follow=True
    )
    assert "page_view" in _html(saved)
    removed = _post(client, "/privacy/retention/delete", {"event_name": "page_view"}, follow=True)
    assert "保留规则已删除。" in _html(removed)


def test_privacy_page_is_admin_only(app, client, auth):
    make_user(app, "marketer", "m@test.cn")
    auth.login("m@test.cn")
    assert client.get("/privacy").status_code == 403
    assert (
        _post(client, "/privacy/export", {"profile_id": 1, "format": "json"}, page="/").status_code
        == 403
    )


def test_consent_panel_include_and_recording_consent(app, client, auth, admin):
    pid = person(app, birth_date="2016-04-01")
    with app.test_request_context("/"):
        user = db.session.get(User, admin)
        login_user(SessionUser(user, "test-session"))
        html = render_template_string(
            '{% include "privacy/_consent_panel.html" %}', profile=db.session.get(Profile, pid)
        )
    assert 'data-testid="consent-panel"' in html
    assert "未满 14 岁" in html  # a minor without guardian consent is flagged
    auth.login()
    recorded = _post(
        client,
        f"/profiles/{pid}/consents",
        {"purpose": "guardian", "channel": "*", "status": "granted", "note": "纸质表 17"},
        page="/",
    )
    assert recorded.status_code == 302 and recorded.headers["Location"].endswith("#consents")
    with app.app_context():
        assert has_consent(pid, "guardian")
