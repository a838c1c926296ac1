"""Demo journeys for ``cdp journeys seed-demo``: approved content, segments, published journeys.

The demo marketer writes the content and the demo reviewer approves it (MLR numbers, expiry
a year ahead); the journeys are created and published through ``journeys.service``, so the
validator checks them like any other. Everything is looked up by name first: a second run
creates nothing. Run it after ``cdp seed-demo`` (the users, people and consents),
``cdp loyalty seed-demo`` (the OTC coupon campaign; one is created if it is missing) and
``cdp hcp seed-demo`` (the doctors' master data and the upcoming meeting; planned here if
it is missing).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from cdp.actors import Actor
from cdp.auth.accounts import find_user
from cdp.auth.permissions import require
from cdp.content import operations as content_ops
from cdp.content.library import local_date
from cdp.db import db, utcnow
from cdp.exceptions import Conflict
from cdp.hcp.events import LEARNING_COMPLETED  # minutes watched + quiz: learning complete
from cdp.loyalty import campaigns, products
from cdp.loyalty.common import setting as loyalty_setting
from cdp.models.content import ContentItem
from cdp.models.hcp import Meeting
from cdp.seed import hcp as hcp_demo
from cdp.seed import vocab
from journeys import service
from journeys.models import Journey
from journeys.validation import approved_version
from segments import service as segment_service
from segments import tasks as segment_tasks
from segments.models import Segment

CST = ZoneInfo("Asia/Shanghai")
OTC_CAMPAIGN = vocab.COUPONS[2][1]  # "常备药 5 元券", made by `cdp loyalty seed-demo`
MEETING_TOPIC = hcp_demo.UPCOMING.topic
CHRONIC_CODES = [drug.code for drug in vocab.CHRONIC_RX]
OTC_NAMES = [drug.name for drug in vocab.OTC]
HEALTH_SEGMENT = "已授权健康数据的患者"
CARDIO_SEGMENT = "已认证心内科医生（可触达）"
NAMES = {
    "otc_refill": "常备药续购提醒（按药品）",
    "rx_refill": "慢病用药续方提醒（服务通知）",
    "welcome": "新关注用户欢迎系列（健康小测评）",
    "hcp_meeting": "心内科医生线上学术会邀请（CME 积分）",
}
DESCRIPTIONS = {
    "otc_refill": (
        "POS 购买的每种长期服用的非处方药（维生素、钙片等）各走一条旅程：用完前 5 天发服务号用药"
        "提醒；7 天内再次购买得积分，否则发常备药 5 元券，并用小程序订阅消息（可触达时）或短信告知。"
        "券和告知属于营销，所以这是 marketing 旅程（service 旅程不能发营销内容；营销旅程遵守全局"
        "对照组和频次上限）。处方药不进这条旅程：积分和优惠券不得与处方药挂钩。"
        "仅限已单独授权健康数据的患者。"
    ),
    "rx_refill": (
        "慢病处方药（他汀、降压、降糖等）按药品各自提醒：用完前 5 天发服务号用药提醒，7 天内未再次"
        "购买则再提醒一次。只发服务通知，不发优惠、不给积分（处方药不得促销），所以是 service 旅程。"
        "仅限已单独授权健康数据的患者。"
    ),
    "welcome": (
        "新关注服务号的患者：1 小时后发欢迎通知；10% 留作对照组；2 天后用小程序订阅消息邀请参加"
        "心血管健康小测评，7 天内完成得积分。取消关注即退出。"
    ),
    "hcp_meeting": (
        "{at} 邀请已认证、可经服务号触达的心内科医生参加线上学术会“{topic}”（记为会议邀请，"
        "无需经理审批），并发送会议通知（非处方药内容）。医生观看达到最低时长并提交测验即完成学习，"
        "由医生学术模块发放继续教育积分（仅限已认证医生，受年度积分上限约束）；旅程等待 14 天。"
    ),
}


def _team() -> tuple[Actor, Actor]:
    """The demo marketer (writes, builds, publishes) and reviewer (approves content)."""
    found = []
    for wanted in ("marketer", "reviewer"):
        email = next(email for email, role, _ in vocab.DEMO_USERS if role == wanted)
        user = find_user(email)
        if user is None:
            raise Conflict(f"demo user {email} is missing: run `cdp seed-demo` first", "users")
        found.append(Actor(kind="user", user_id=user.id, role=user.role))
    return found[0], found[1]


def _template(template_id: str, fields: dict, **extra) -> dict:
    return {"body": {"template_id": template_id, "fields": fields, **extra}}


def _content_specs(meeting: Meeting) -> dict[str, tuple[str, str, dict]]:
    """key -> (name, kind, fields) of each demo content item."""
    app = vocab.MINIPROGRAM_APP_ID
    service_notice = {"audience": "patient", "product_class": "non_drug", "category": "service"}
    otc_promotion = {"audience": "patient", "product_class": "otc", "category": "marketing",
                     "products": OTC_NAMES, "therapeutic_area": "常备药"}  # fmt: skip
    refill = {"thing1": "{{ context.name[:20] }}", "date2": "{{ context.run_out_date }}"}
    meds_page = {"miniprogram": {"appid": app, "pagepath": "pages/medication/list"}}
    quiz_points = loyalty_setting("LOYALTY_ACTION_POINTS").get("quiz_completed", 0)
    # From the coupon step before it: a coupon that was not issued is never announced (the
    # send is skipped as render_failed).
    coupon_code = "{{ context.coupon_code }}"
    return {
        "refill_notice": ("用药提醒：药品即将用完", "wechat_template", {
            **_template(vocab.TEMPLATES[0][0], {**refill, "thing3": "药快用完了，请及时购药"},
                        **meds_page),
            **service_notice, "therapeutic_area": "用药依从性"}),
        "refill_overdue": ("用药提醒：药品可能已用完", "wechat_template", {
            **_template(vocab.TEMPLATES[0][0], {**refill, "thing3": "如已购药，请忽略本提醒"},
                        **meds_page),
            **service_notice, "therapeutic_area": "用药依从性"}),
        "coupon_mp": ("常备药 5 元券到账（订阅消息）", "miniprogram_subscribe", {
            "body": {"template_id": vocab.TEMPLATES[1][0], "page": "pages/coupon/list",
                     "fields": {"thing1": OTC_CAMPAIGN, "character_string2": coupon_code,
                                "thing3": "30天内到合作药房出示券码"}},
            **otc_promotion}),
        "coupon_sms": ("常备药 5 元券到账（短信）", "sms", {
            "body": {"text": f"【康护健康】您的常备药5元券已到账，券码{coupon_code}，30天内在"
                             "合作药房出示即可使用。回T退订"},
            **otc_promotion}),
        "welcome": ("欢迎关注康护健康", "wechat_template", {
            **_template(vocab.JOURNEY_TEMPLATES["welcome"][0],
                        {"thing1": "康护健康服务号", "thing2": "用药提醒·健康科普·会员积分"},
                        miniprogram={"appid": app, "pagepath": "pages/index/index"}),
            **service_notice}),
        "quiz_mp": ("心血管健康小测评邀请（订阅消息）", "miniprogram_subscribe", {
            "body": {"template_id": vocab.JOURNEY_TEMPLATES["quiz"][0],
                     "page": f"{vocab.QUIZ_PAGE}?quiz_id=heart_health",
                     "fields": {"thing1": "3分钟心血管健康小测评",
                                "thing2": f"完成测评可得{quiz_points}积分"}},
            "audience": "patient", "product_class": "non_drug", "category": "marketing",
            "therapeutic_area": "心血管"}),
        "meeting_invite": (f"学术会议通知：{MEETING_TOPIC}", "wechat_template", {
            **_template(vocab.JOURNEY_TEMPLATES["meeting"][0],
                        {"thing1": MEETING_TOPIC,
                         "time2": meeting.starts_at.astimezone(CST).strftime("%Y-%m-%d %H:%M"),
                         "thing3": "线上直播，会后测验得CME学分"},
                        url=f"https://carepath.example/meetings/{meeting.id}"),
            "audience": "hcp", "product_class": "non_drug", "category": "service",
            "therapeutic_area": "心血管"}),
    }  # fmt: skip


def _content(marketer: Actor, reviewer: Actor, spec: tuple, code: str, now: datetime) -> int:
    """The item's id, approved: found by name and kind, else written, submitted, approved."""
    name, kind, fields = spec
    fields = {**fields, "expires_on": local_date(now) + timedelta(days=365)}
    item_id = db.session.scalar(
        sa.select(ContentItem.id).where(ContentItem.name == name, ContentItem.kind == kind)
    )
    if item_id is not None and approved_version(item_id, now) is not None:
        return item_id
    if item_id is None:
        version = content_ops.create_item(marketer, name, kind, **fields)
    else:  # its approval expired or was withdrawn: a new version goes through review
        version = content_ops.new_version(marketer, item_id, **fields)
    content_ops.submit(marketer, version.id, "演示旅程内容，请审核")
    content_ops.approve(reviewer, version.id, "演示数据：已审核", approval_code=code)
    return version.item_id


def _segment(marketer: Actor, name: str, description: str, rule: dict) -> int:
    """An active segment by name, else created and refreshed now (schedules read members)."""
    query = sa.select(Segment.id).where(Segment.name == name, Segment.status == "active")
    segment_id = db.session.scalar(query)
    if segment_id is None:
        segment_id = segment_service.create_segment(marketer, name, {"rule": rule}, description).id
        job = segment_tasks.create_refresh_job(marketer, [segment_id])
        segment_tasks.run_refresh(job.id, [segment_id], reason="demo")
    return segment_id


def _otc_campaign(marketer: Actor) -> int:
    """The loyalty demo's OTC coupon campaign, or a campaign like it made here."""
    usable = [
        c
        for c in campaigns.list_campaigns("active")
        if c.audience == "patient" and c.products  # creation refused Rx products for patients
        and (c.valid_until is None or c.valid_until > utcnow())
    ]  # fmt: skip
    usable.sort(key=lambda c: (c.name != OTC_CAMPAIGN, c.id))
    if usable:
        return usable[0].id
    products.import_demo_products(marketer)
    body = {"name": OTC_CAMPAIGN, "type": "amount_off", "value": 5, "budget": 5000,
            "valid_days": 30, "products": [d.code for d in vocab.OTC], "status": "active"}  # fmt: skip
    return campaigns.create_campaign(marketer, body).id


def _refill_steps(notice: int) -> list[dict]:
    return [
        {"id": "before_run_out", "type": "wait", "label": "用完前 5 天 09:30",
         "until_trait": "context.run_out_date", "offset_days": -5, "at": "09:30",
         "next": "notice"},
        {"id": "notice", "type": "send", "label": "服务号用药提醒", "channel": "wechat",
         "content_id": notice, "next": "bought"},
        {"id": "bought", "type": "wait_for_event", "label": "7 天内再次购买同一药品",
         "event": "pos_purchase", "match_entry_key": True, "timeout": "7d",
         "next": "rebought", "timeout_next": "not_yet"},
    ]  # fmt: skip


def _per_medicine(item_where: list[dict]) -> dict:
    return {"type": "event", "event": "pos_purchase", "for_each": "items",
            "item_where": item_where, "entry_key": "drug_code"}  # fmt: skip


def _definitions(ids: dict, invite_at: datetime) -> dict[str, dict]:
    """name key -> definition of each demo journey."""
    otc = _refill_steps(ids["refill_notice"])
    otc[2].update(next="points", timeout_next="coupon")
    rx = _refill_steps(ids["refill_notice"])
    rx[2].update(next="done", timeout_next="overdue")
    patients = {"kind": "patient", "segment_id": ids["health_segment"]}
    this_meeting = [{"property": "meeting_id", "op": "equals", "value": ids["meeting"]}]
    return {
        "otc_refill": {
            "category": "marketing",  # the coupon and its announcement are marketing
            "audience": patients,
            "trigger": _per_medicine([
                {"property": "rx", "op": "equals", "value": False},
                {"property": "days_of_supply", "op": "gte", "value": 14},
                {"property": "days_of_supply", "op": "lte", "value": 90}]),
            "entry": {"reentry": "after_exit", "max_concurrent": 5},
            "exit": [{"event": "unsubscribe"}],
            # Counted from the purchase that entered: the supply (at most 90 d), then a week.
            "goal": {"event": "pos_purchase", "within_days": 100},
            "start": "before_run_out",
            "steps": [*otc,
                {"id": "points", "type": "award_points", "label": "按时续购积分",
                 "action": "refill_on_time"},
                {"id": "coupon", "type": "issue_coupon", "label": "常备药 5 元券",
                 "campaign_id": ids["campaign"], "next": "channel"},
                {"id": "channel", "type": "branch", "label": "小程序可触达？",
                 "condition": {"type": "reachable", "channel": "miniprogram"},
                 "then": "tell_mp", "else": "tell_sms"},
                {"id": "tell_mp", "type": "send", "label": "小程序订阅消息",
                 "channel": "miniprogram", "content_id": ids["coupon_mp"]},
                {"id": "tell_sms", "type": "send", "label": "短信", "channel": "sms",
                 "content_id": ids["coupon_sms"]}],
        },
        "rx_refill": {
            "category": "service",
            "audience": patients,
            "trigger": _per_medicine([
                {"property": "drug_code", "op": "in", "value": CHRONIC_CODES},
                {"property": "days_of_supply", "op": "exists"}]),
            "entry": {"reentry": "after_exit", "max_concurrent": 5},
            "exit": [{"event": "unsubscribe"}],
            "goal": {"event": "pos_purchase", "within_days": 60},
            "start": "before_run_out",
            "steps": [*rx,
                {"id": "done", "type": "exit", "label": "已续方"},
                {"id": "overdue", "type": "send", "label": "再次提醒", "channel": "wechat",
                 "content_id": ids["refill_overdue"]}],
        },
        "welcome": {
            "category": "marketing",
            "audience": {"kind": "patient"},
            "trigger": {"type": "event", "event": "subscribe"},
            "entry": {"reentry": "once"},
            "exit": [{"event": "unsubscribe"}],
            "goal": {"event": "quiz_completed", "within_days": 10},
            "start": "settle",
            "steps": [
                {"id": "settle", "type": "wait", "label": "1 小时后", "duration": "1h",
                 "next": "welcome"},
                {"id": "welcome", "type": "send", "label": "欢迎通知", "channel": "wechat",
                 "content_id": ids["welcome"], "next": "ab"},
                {"id": "ab", "type": "split", "label": "对照组 10%", "paths": [
                    {"percent": 90, "next": "two_days", "label": "测评邀请"},
                    {"percent": 10, "holdout": True, "label": "对照组"}]},
                {"id": "two_days", "type": "wait", "label": "2 天后", "duration": "2d",
                 "next": "quiz"},
                {"id": "quiz", "type": "send", "label": "测评邀请", "channel": "miniprogram",
                 "content_id": ids["quiz_mp"], "next": "answered"},
                {"id": "answered", "type": "wait_for_event", "label": "7 天内完成测评",
                 "event": "quiz_completed", "timeout": "7d", "next": "points",
                 "timeout_next": "no_answer"},
                {"id": "points", "type": "award_points", "label": "测评积分",
                 "action": "quiz_completed"},
                {"id": "no_answer", "type": "exit", "label": "未完成"}],
        },
        "hcp_meeting": {
            "category": "marketing",
            "audience": {"kind": "hcp", "segment_id": ids["cardio_segment"]},
            "trigger": {"type": "schedule", "segment_id": ids["cardio_segment"],
                        "at": invite_at.isoformat()},
            "entry": {"reentry": "once"},
            "goal": {"event": LEARNING_COMPLETED, "within_days": 14, "where": this_meeting},
            "quiet_hours": {"start": "20:00", "end": "08:30", "policy": "defer"},
            "start": "invite",
            "steps": [
                {"id": "invite", "type": "invite_to_meeting", "label": "会议邀请",
                 "meeting_id": ids["meeting"], "next": "notice"},
                {"id": "notice", "type": "send", "label": "会议通知", "channel": "wechat",
                 "content_id": ids["meeting_invite"], "next": "learned"},
                # Minutes watched and the quiz make the completion; the module awards the
                # points (verified doctors, within the annual cap), so no step here does.
                {"id": "learned", "type": "wait_for_event", "label": "14 天内完成学习",
                 "event": LEARNING_COMPLETED, "where": this_meeting, "timeout": "14d",
                 "next": "done", "timeout_next": "not_completed"},
                {"id": "done", "type": "exit", "label": "已完成（积分由会议模块发放）"},
                {"id": "not_completed", "type": "exit", "label": "未完成学习"}],
        },
    }  # fmt: skip


def _journey(marketer: Actor, name: str, description: str, definition: dict) -> dict | None:
    """Create and publish the journey unless one of that name exists (a draft is published)."""
    journey = db.session.scalar(
        sa.select(Journey).where(Journey.name == name, Journey.status != "archived").limit(1)
    )
    if journey is not None and journey.status != "draft":
        return None
    if journey is None:
        journey = service.create_journey(marketer, name, definition, description)
    else:  # an earlier run stopped before publishing it
        service.update_journey(marketer, journey.id, definition=definition)
    version = service.publish(marketer, journey.id, note="演示旅程")
    return {"id": journey.id, "name": name, "version": version.number}


def seed_journeys(actor: Actor, now: datetime | None = None) -> dict:
    """Create the demo content, segments and journeys that are missing; returns what was made.

    :raise InvalidDefinition: a journey did not validate (with every problem).
    """
    require(actor, "journeys:publish")
    now = now or utcnow()
    marketer, reviewer = _team()
    # The doctors' invitation goes out at 10:00 in three days.
    invite_at = (now.astimezone(CST) + timedelta(days=3)).replace(
        hour=10, minute=0, second=0, microsecond=0
    )
    # The meeting of `cdp hcp seed-demo` (planned now when missing), a week after the invitation.
    meeting = hcp_demo.upcoming_meeting(now, after=invite_at + timedelta(days=1))
    ids = {"meeting": meeting.id}
    specs = _content_specs(meeting)
    for n, (key, spec) in enumerate(specs.items(), start=1):
        ids[key] = _content(marketer, reviewer, spec, f"MLR-DEMO-{now:%Y}-{n:03d}", now)
    ids["health_segment"] = _segment(
        marketer,
        HEALTH_SEGMENT,
        "单独同意处理健康数据（PIPL 敏感个人信息）的患者：用药提醒的受众。",
        {"and": [{"type": "profile_kind", "kind": "patient"},
                 {"type": "consent", "purpose": "health_data"}]},
    )  # fmt: skip
    ids["cardio_segment"] = _segment(
        marketer,
        CARDIO_SEGMENT,
        "执业资格已认证、已同意服务号营销消息的心内科医生。",
        {"and": [{"type": "profile_kind", "kind": "hcp"},
                 {"type": "trait", "trait": "hcp_verified", "op": "equals", "value": True},
                 {"type": "trait", "trait": "department", "op": "equals", "value": "心内科"},
                 {"type": "reachable", "channel": "wechat"}]},
    )  # fmt: skip
    ids["campaign"] = _otc_campaign(marketer)
    descriptions = {**DESCRIPTIONS}
    descriptions["hcp_meeting"] = descriptions["hcp_meeting"].format(
        at=f"{invite_at:%Y-%m-%d %H:%M}", topic=MEETING_TOPIC
    )
    created = []
    for key, definition in _definitions(ids, invite_at).items():
        made = _journey(marketer, NAMES[key], descriptions[key], definition)
        if made is not None:
            created.append(made)
    return {"journeys": created, "ids": ids}
