"""Content library: versions, the MLR review workflow, freezing, rendering and sanitising."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
import sqlalchemy as sa

from cdp.actors import Actor
from cdp.content import operations as ops
from cdp.content.library import transitions_of
from cdp.content.rendering import RenderError, render_body, variables_of
from cdp.content.sanitize import sanitise_html
from cdp.db import db, utcnow
from cdp.exceptions import Conflict, PermissionDenied, ValidationFailed
from cdp.models import AuditEntry
from tests.conftest import make_user

EXPIRES = (date.today() + timedelta(days=180)).isoformat()
SMS_MARKETING = "【康护】{{ profile.name }}您好，本月会员日满100减20。回T退订"
SERVICE_SMS = "【康护】您的{{ context.drug }}预计{{ context.refill_date }}用完，请及时续方。"


class Team:
    """A marketer who writes content, two reviewers, and an admin."""

    def __init__(self, app):
        ids = {
            role: make_user(app, role.split("2")[0], f"{role}@test.cn")
            for role in ("marketer", "reviewer", "reviewer2", "admin")
        }
        self.marketer = Actor(kind="user", user_id=ids["marketer"], role="marketer")
        self.reviewer = Actor(kind="user", user_id=ids["reviewer"], role="reviewer")
        self.reviewer2 = Actor(kind="user", user_id=ids["reviewer2"], role="reviewer")
        self.admin = Actor(kind="user", user_id=ids["admin"], role="admin")


@pytest.fixture
def team(app_ctx):
    return Team(app_ctx)


def sms_fields(text=SERVICE_SMS, **overrides) -> dict:
    fields = {
        "body": {"text": text},
        "audience": "patient",
        "product_class": "non_drug",
        "category": "service",
        "expires_on": EXPIRES,
        "therapeutic_area": "糖尿病",
    }
    fields.update(overrides)
    return fields


def approved(team, kind="sms", name="续方提醒", code="MLR-2026-001", **fields):
    """Create, submit and approve a version; return it."""
    fields = fields or sms_fields()
    version = ops.create_item(team.marketer, name, kind, **fields)
    ops.submit(team.marketer, version.id)
    return ops.approve(team.reviewer, version.id, "ok", approval_code=code)


def test_workflow_draft_submit_approve_with_history_and_audit(team):
    version = ops.create_item(team.marketer, "续方提醒", "sms", **sms_fields())
    assert (version.number, version.status) == (1, "draft")
    assert version.variables == ["context.drug", "context.refill_date"]
    ops.submit(team.marketer, version.id, "please review")
    ops.approve(team.reviewer, version.id, "合规", approval_code="MLR-1")
    assert version.status == "approved" and version.approved_hash
    steps = [(t.from_status, t.to_status) for t in transitions_of([version.id])][::-1]
    assert steps == [(None, "draft"), ("draft", "submitted"), ("submitted", "approved")]
    actions = db.session.scalars(sa.select(AuditEntry.action).order_by(AuditEntry.id)).all()
    for action in ("content.create", "content.new_version", "content.submit", "content.approve"):
        assert action in actions


def test_author_cannot_approve_their_own_even_as_admin(team):
    version = ops.create_item(team.admin, "自写", "sms", **sms_fields())
    ops.submit(team.admin, version.id)
    with pytest.raises(PermissionDenied):
        ops.approve(team.admin, version.id, approval_code="MLR-1")
    denied = db.session.scalar(
        sa.select(AuditEntry).where(
            AuditEntry.action == "content.approve", AuditEntry.outcome == "denied"
        )
    )
    assert denied is not None
    ops.approve(team.reviewer, version.id, approval_code="MLR-1")  # someone else may


def test_an_editor_of_the_draft_cannot_approve_it_either(team):
    version = ops.create_item(team.marketer, "x", "sms", **sms_fields())
    ops.update_draft(team.admin, version.id, therapeutic_area="高血压")
    ops.submit(team.marketer, version.id)
    with pytest.raises(PermissionDenied):
        ops.approve(team.admin, version.id, approval_code="MLR-1")


def test_only_reviewers_approve_and_the_system_needs_a_named_reviewer(team):
    version = ops.create_item(team.marketer, "x", "sms", **sms_fields())
    ops.submit(team.marketer, version.id)
    with pytest.raises(PermissionDenied):
        ops.approve(team.marketer, version.id, approval_code="MLR-1")
    with pytest.raises(PermissionDenied):
        ops.approve(Actor.system(), version.id, approval_code="MLR-1")


def test_approval_needs_an_mlr_number_and_rejection_a_comment(team):
    version = ops.create_item(team.marketer, "x", "sms", **sms_fields())
    ops.submit(team.marketer, version.id)
    with pytest.raises(ValidationFailed) as err:
        ops.approve(team.reviewer, version.id)
    assert err.value.field == "approval_code"
    with pytest.raises(ValidationFailed):
        ops.reject(team.reviewer, version.id, "  ")
    ops.reject(team.reviewer, version.id, "夸大疗效")
    assert version.status == "rejected"
    assert transitions_of([version.id])[0].comment == "夸大疗效"


def test_approved_versions_are_frozen_and_edits_make_a_new_draft(team):
    version = approved(team)
    with pytest.raises(Conflict):
        ops.update_draft(team.marketer, version.id, therapeutic_area="x")
    draft = ops.new_version(team.marketer, version.item_id, therapeutic_area="高血压")
    assert (draft.number, draft.status, draft.approval_code) == (2, "draft", None)
    assert draft.body == version.body and version.status == "approved"
    with pytest.raises(Conflict):
        ops.new_version(team.marketer, version.item_id)  # one open draft at a time


def test_submit_refuses_what_the_rules_forbid(team):
    cases = [
        (sms_fields(product_class="rx", products=["二甲双胍"]), "audience"),
        (sms_fields(product_class="otc"), "products"),
        (sms_fields(text="您好，{{ context.x }}"), "body.text"),  # no signature
        (sms_fields(text=SMS_MARKETING.replace("回T退订", ""), category="marketing"), "body.text"),
        (sms_fields(expires_on=None), "expires_on"),
        (sms_fields(expires_on=date.today().isoformat()), "expires_on"),
        (sms_fields(text="【康护】{{ foo }}"), "body.text"),
        (sms_fields(text="【康护】{% if %}"), "body.text"),
    ]
    for fields, field in cases:
        version = ops.create_item(team.marketer, "x", "sms", **fields)
        with pytest.raises(ValidationFailed) as err:
            ops.submit(team.marketer, version.id)
        assert err.value.field == field, (fields, err.value.message)


def test_wechat_template_messages_are_service_only_and_follow_field_rules(team):
    body = {"template_id": "TPL1", "fields": {"keyword1": "{{ context.drug }}"}}
    version = ops.create_item(
        team.marketer, "t", "wechat_template", **sms_fields(body=body, category="marketing")
    )
    with pytest.raises(ValidationFailed) as err:
        ops.submit(team.marketer, version.id)
    assert "service" in err.value.message
    bad = {"template_id": "TPL1", "fields": {"first": "您好", "keyword1": "x" * 21}}
    version = ops.create_item(team.marketer, "t", "wechat_template", **sms_fields(body=bad))
    with pytest.raises(ValidationFailed) as err:
        ops.submit(team.marketer, version.id)
    assert err.value.field == "body.fields.first"


def test_withdraw_runs_hooks_and_expiry_marks_versions(team):
    seen = []
    ops.register_withdraw_hook("test", seen.append)
    try:
        version = approved(team)
        ops.withdraw(team.reviewer, version.id, "recall")
        assert version.status == "withdrawn" and seen == [version.id]
        with pytest.raises(Conflict):
            ops.withdraw(team.reviewer, version.id)
        other = approved(team, name="b")
        assert ops.expire_due(Actor.system(), utcnow() + timedelta(days=400)) == 1
        assert other.status == "expired" and seen == [version.id, other.id]
    finally:
        ops.WITHDRAW_HOOKS.pop("test")


def test_rendering_is_sandboxed_and_strict():
    assert variables_of("sms", {"text": "{{ profile.name }} {{ context['date'] }}"}) == [
        "context.date",
        "profile.name",
    ]
    for source in ("{{ profile.__class__ }}", "{{ ''.__class__.__mro__ }}", "{{ lipsum }}"):
        with pytest.raises(RenderError):
            render_body("sms", {"text": source}, {"city": "上海"}, {})
    with pytest.raises(RenderError) as err:
        render_body("sms", {"text": "{{ profile.city }}"}, {"city": ""}, {})
    assert "profile.city" in err.value.message
    text = render_body("sms", {"text": "{{ profile.city|default('您') }}"}, {}, {})["text"]
    assert text == "您"


def test_articles_are_sanitised_on_save_and_after_rendering(team):
    html = (
        '<p onclick="x()">药品说明</p><script>alert(1)</script>'
        '<a href="javascript:alert(1)">x</a><img src="/a.png" onerror="y()">'
        '<a href="{{ context.url }}">更多</a>'
    )
    body = {"title": "T", "html": html}
    version = ops.create_item(team.marketer, "a", "article", **sms_fields(body=body))
    stored = version.body["html"]
    assert "<script" not in stored and "onclick" not in stored and "javascript:" not in stored
    rendered = render_body("article", version.body, {}, {"url": "javascript:alert(2)"})
    assert "javascript:" not in rendered["html"]
    assert sanitise_html("<b>a<i>b</b>") == "<b>a<i>b</i></b>"
    assert sanitise_html('<a href="java\tscript:x">y</a>') == "<a>y</a>"
