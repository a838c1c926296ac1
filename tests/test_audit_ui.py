"""The audit log viewer (filters, keyset paging, audited CSV export), /api/v1/audit, and the
translated violation reasons of the source page."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from cdp import audit
from cdp.actors import SYSTEM, Actor
from cdp.db import db
from cdp.ingest.pipeline import ingest
from cdp.loyalty.partners import PartnerActor
from cdp.models import AuditEntry
from cdp.sources import create_source, list_violations
from tests.conftest import csrf_token_from, make_user
from tests.test_api import bearer, issue_token
from web.api import audit as audit_api
from web.ui.areas import violation_reason

# 23:30 and 00:30 in Shanghai: either side of midnight there, the same day in UTC.
LATE = datetime(2026, 3, 1, 15, 30, tzinfo=UTC)
EARLY = datetime(2026, 3, 1, 16, 30, tzinfo=UTC)


def record_at(monkeypatch, at: datetime, *args, **details) -> int:
    with monkeypatch.context() as patch:
        patch.setattr(audit, "utcnow", lambda: at)
        entry = audit.record(*args, **details)
        db.session.commit()
    return entry.id


@pytest.fixture
def log(app, admin, monkeypatch):
    """A few entries from different actors, actions, objects, outcomes and days."""
    reviewer_id = make_user(app, "reviewer", "reviewer@test.cn")
    reviewer = Actor(kind="user", user_id=reviewer_id, role="reviewer")
    partner = PartnerActor(kind="partner", role="partner", partner_id=7)
    with app.app_context():
        ids = {
            "approve": record_at(monkeypatch, LATE, reviewer, "content.approve", "content", 3),
            "reject": record_at(monkeypatch, EARLY, reviewer, "content.reject", "content", 4),
            "self": record_at(
                monkeypatch, EARLY, reviewer, "content.approve", "content", 4, outcome="denied"
            ),
            "lookalike": record_at(monkeypatch, EARLY, SYSTEM, "contentx.sync", "content", 3),
            "underscore": record_at(monkeypatch, EARLY, SYSTEM, "a_b.run"),
            "not_underscore": record_at(monkeypatch, EARLY, SYSTEM, "axb.run"),
            "partner": record_at(monkeypatch, EARLY, partner, "coupon.redeem", "coupon", "C-1"),
        }
    ids["reviewer"] = reviewer_id
    return ids


def listed(client, **query) -> list[int]:
    response = client.get("/audit", query_string=query)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return [int(i) for i in re.findall(r'<tr data-id="(\d+)"', response.get_data(as_text=True))]


def test_each_filter_narrows_the_list(client, auth, log):
    auth.login()
    assert listed(client, action="content.") == [log["self"], log["reject"], log["approve"]]
    assert listed(client, action="a_b.") == [log["underscore"]]  # _ is not a wildcard
    assert listed(client, actor="reviewer@test.cn", outcome="denied") == [log["self"]]
    assert listed(client, actor=str(log["reviewer"]), target_id="3") == [log["approve"]]
    assert listed(client, actor="partner:7") == [log["partner"]]
    assert listed(client, actor="nobody@test.cn") == []
    assert listed(client, target_type="coupon", target_id="C-1") == [log["partner"]]
    # Days are the platform's (Asia/Shanghai): 15:30 UTC is still 1 March there, 16:30 is not.
    assert listed(client, action="content.", until="2026-03-01") == [log["approve"]]
    assert listed(client, action="content.", since="2026-03-02", until="2026-03-02") == [
        log["self"],
        log["reject"],
    ]
    # Empty fields, as a submitted form sends them, filter nothing.
    everything = listed(client, actor="", action="", since="", until="", outcome="")
    assert set(log.values()) - {log["reviewer"]} <= set(everything)


def test_bad_filters_are_explained_in_chinese(client, auth, log):
    auth.login()
    response = client.get("/audit", query_string={"since": "2026-03-05", "until": "2026-03-01"})
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert "筛选条件无效" in html and "截止" in html
    assert 'data-id="' not in html
    assert client.get("/audit", query_string={"since": "yesterday"}).status_code == 422


def test_pages_follow_the_id_keyset_and_keep_the_filters(app, client, auth, admin):
    with app.app_context():
        for n in range(60):
            audit.record(SYSTEM, "bulk.step", "job", n)
        audit.record(SYSTEM, "other.step")
        db.session.commit()
    auth.login()
    html = client.get("/audit", query_string={"action": "bulk."}).get_data(as_text=True)
    first = [int(i) for i in re.findall(r'<tr data-id="(\d+)"', html)]
    assert len(first) == 50 and first == sorted(first, reverse=True)
    older = re.search(r'href="([^"]+)" data-testid="audit-older"', html).group(1)
    assert "action=bulk." in older and f"before={first[-1]}" in older
    html = client.get(older.replace("&amp;", "&")).get_data(as_text=True)
    second = [int(i) for i in re.findall(r'<tr data-id="(\d+)"', html)]
    assert len(second) == 10 and max(second) < min(first)
    assert 'data-testid="audit-older"' not in html
    assert "哈希链完整" not in html  # the chain is checked on the first page only


def test_export_is_the_filtered_view_and_is_audited(app, client, auth, log):
    auth.login()
    page = client.get("/audit", query_string={"action": "content."})
    before = _count(app, "audit.export")
    assert before == 0  # looking is not audited
    token = csrf_token_from(page.get_data(as_text=True))
    response = client.post(
        "/audit/export.csv", query_string={"action": "content."}, data={"csrf_token": token}
    )
    assert response.status_code == 200 and response.mimetype == "text/csv"
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True).lstrip("\ufeff"))))
    assert rows[0][:5] == ["id", "at", "actor_type", "actor_id", "action"]
    assert [int(r[0]) for r in rows[1:]] == [log["approve"], log["reject"], log["self"]]
    assert {r[4] for r in rows[1:]} == {"content.approve", "content.reject"}
    with app.app_context():
        entry = db.session.scalar(sa.select(AuditEntry).where(AuditEntry.action == "audit.export"))
        assert entry.details == {"rows": 3, "filters": {"action": "content."}}
        assert entry.actor_type == "user"


def test_export_needs_a_form_token_and_the_audit_permission(app, client, auth, log):
    auth.login()
    assert client.post("/audit/export.csv").status_code == 400
    auth.logout()
    make_user(app, "marketer", "m@test.cn")
    auth.login("m@test.cn")
    page = client.get("/")
    token = csrf_token_from(page.get_data(as_text=True))
    assert client.get("/audit").status_code == 403
    assert client.post("/audit/export.csv", data={"csrf_token": token}).status_code == 403
    assert _count(app, "audit.export") == 0


def test_exported_cells_cannot_be_spreadsheet_formulas():
    entry = AuditEntry(
        id=1,
        at=LATE,
        actor_type="system",
        action="x.y",
        object_type="event",
        object_id="=HYPERLINK(1)",
        outcome="ok",
        details={},
        row_hash="h",
    )
    assert audit_api._row(entry)[6] == "'=HYPERLINK(1)"


def _count(app, action: str) -> int:
    with app.app_context():
        return db.session.scalar(
            sa.select(sa.func.count()).select_from(AuditEntry).where(AuditEntry.action == action)
        )


# --- the API --------------------------------------------------------------------------------


@pytest.fixture
def api(app):
    """GET /api/v1/audit, registered as web/api/__init__.py does (the lead adds it there)."""
    if "audit" not in app.blueprints:
        app.register_blueprint(audit_api.bp)
    return app


def test_api_filters_and_pages_with_a_cursor(api, client, log, admin):
    headers = bearer(issue_token(api, admin))
    response = client.get(
        "/api/v1/audit", query_string={"action": "content.", "limit": 2}, headers=headers
    )
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert [e["id"] for e in body["items"]] == [log["self"], log["reject"]]
    assert body["items"][0]["outcome"] == "denied"
    assert body["items"][0]["target_type"] == "content" and body["items"][0]["target_id"] == "4"
    response = client.get(
        "/api/v1/audit",
        query_string={"action": "content.", "limit": 2, "cursor": body["next_cursor"]},
        headers=headers,
    )
    body = response.get_json()
    assert [e["id"] for e in body["items"]] == [log["approve"]] and body["next_cursor"] is None
    since = (LATE + timedelta(days=1)).date().isoformat()
    response = client.get(
        "/api/v1/audit", query_string={"since": since, "until": "2026-03-01"}, headers=headers
    )
    assert response.status_code == 422


def test_api_export_is_audited_and_others_are_refused(api, client, log, admin):
    headers = bearer(issue_token(api, admin))
    response = client.get(
        "/api/v1/audit/export.csv", query_string={"actor": "partner:7"}, headers=headers
    )
    assert response.status_code == 200
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True).lstrip("\ufeff"))))
    assert [int(r[0]) for r in rows[1:]] == [log["partner"]]
    assert _count(api, "audit.export") == 1
    marketer = bearer(issue_token(api, make_user(api, "marketer", "m@test.cn")))
    assert client.get("/api/v1/audit", headers=marketer).status_code == 403
    assert client.get("/api/v1/audit/export.csv", headers=marketer).status_code == 403
    assert client.get("/api/v1/audit").status_code == 401


# --- violation reasons (shown on the source page) -------------------------------------------


def test_violation_reasons_are_shown_in_chinese_without_the_offending_value(app_ctx):
    source = create_source(SYSTEM, "公众号", "http")[0]
    bad = [
        "not an object",
        {"type": "track", "userId": "u"},
        {"type": "identify"},
        {"type": "identify", "userId": "u", "timestamp": "yesterday"},
        {"type": "identify", "userId": "u", "traits": {"email": "nope", "phone": "123"}},
        {"type": "bogus", "userId": "u"},
        {"type": "track", "userId": "u", "event": "x" * 300},
        {"type": "identify", "userId": "u", "context": {"externalIds": [{"type": "nope"}]}},
    ]
    ingest(source, bad)
    reasons = [v.reason for v in list_violations(source.id)]
    assert len(reasons) >= len(bad)
    with app_ctx.test_request_context("/"):  # the default locale, zh_CN
        for reason in reasons:
            shown = violation_reason(reason)
            assert re.search(r"[\u4e00-\u9fff]", shown), reason
            assert "yesterday" not in shown and "xxxx" not in shown
        assert violation_reason("'event' is a required property") == "缺少必填字段“event”"
        assert violation_reason("something new") == "something new"
