"""The partner API: key authentication, member sync, changes feed, coupons at the till."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa

from cdp.actors import SYSTEM
from cdp.consent import has_consent, set_consent
from cdp.db import db
from cdp.loyalty import partners
from cdp.loyalty.settle import settle_redemptions
from cdp.models import AuditEntry, Event, Identity, Profile
from cdp.models.loyalty import Member, MemberSync, PartnerKey, Redemption
from tests.conftest import make_user
from tests.test_loyalty_support import setup_loyalty


@pytest.fixture
def loyalty(app):
    return setup_loyalty(app)


MEMBERS = [
    {
        "card_no": "C0001",
        "phone": "13800138001",
        "name": "王芳",
        "gender": "女",
        "birth_date": "1968-04-02",
        "store_code": "LBX-CS-001",
        "joined_at": "2024-03-01T10:00:00+08:00",
        "consents": {"sms": True, "health_data": True},
    },
    {"card_no": "C0002", "phone": "13800138002", "name": "李强", "gender": "M"},
    {"card_no": "C0003", "phone": "12345"},
    {"card_no": "C0004", "store_code": "NOT-OURS"},
    {"phone": "13800138005"},
    {"card_no": "C0001", "phone": "13800138009"},
]


# --- authentication ---------------------------------------------------------------------------


def test_partner_key_is_required_and_user_tokens_are_refused(loyalty):
    c = loyalty.client
    assert c.get("/api/v1/partner/me").status_code == 401
    assert c.get("/api/v1/partner/me", headers=loyalty.marketer).status_code == 401
    assert c.get(f"/api/v1/partner/me?api_key={loyalty.a.key}").status_code == 401
    me = c.get("/api/v1/partner/me", headers=loyalty.a.headers)
    assert me.status_code == 200
    assert me.get_json()["code"] == "lbx"
    assert [s["code"] for s in me.get_json()["stores"]] == ["LBX-CS-001"]
    # A partner key is not a management token either.
    assert c.get("/api/v1/coupon-campaigns", headers=loyalty.a.headers).status_code == 401


def test_rotated_key_stops_working_and_only_a_hash_is_stored(loyalty):
    with loyalty.app.app_context():
        _, new_key = partners.rotate_key(SYSTEM, loyalty.a.id)
        hashes = db.session.scalars(sa.select(PartnerKey.key_hash)).all()
        assert loyalty.a.key not in hashes and new_key not in hashes
    c = loyalty.client
    assert c.get("/api/v1/partner/me", headers=loyalty.a.headers).status_code == 401
    fresh = {"Authorization": f"Bearer {new_key}"}
    assert c.get("/api/v1/partner/me", headers=fresh).status_code == 200


def test_grace_period_keeps_the_old_key_for_a_while(loyalty):
    with loyalty.app.app_context():
        partners.rotate_key(SYSTEM, loyalty.a.id, grace_minutes=10)
    assert loyalty.client.get("/api/v1/partner/me", headers=loyalty.a.headers).status_code == 200


def test_suspended_partner_is_refused(loyalty):
    with loyalty.app.app_context():
        partners.set_status(SYSTEM, loyalty.a.id, "suspended")
    assert loyalty.client.get("/api/v1/partner/me", headers=loyalty.a.headers).status_code == 401


# --- member sync ------------------------------------------------------------------------------


def test_member_sync_reports_every_row_and_links_cards_to_profiles(loyalty):
    response = loyalty.sync(loyalty.a, MEMBERS)
    assert response.status_code == 200
    body = response.get_json()
    assert (body["created"], body["updated"], body["unchanged"], body["rejected"]) == (2, 0, 0, 4)
    results = {r["index"]: r for r in body["results"]}
    assert results[0]["status"] == results[1]["status"] == "created"
    assert results[2]["reason"].startswith("phone:")
    assert results[3]["reason"].startswith("store_code:")
    assert results[4]["reason"] == "card_no: required"
    assert "repeats row 0" in results[5]["reason"]
    with loyalty.app.app_context():
        ident = db.session.scalar(sa.select(Identity).where(Identity.value_index == "C0001"))
        assert (ident.type, ident.namespace) == ("pharmacy_member", "lbx")
        profile = db.session.get(Profile, ident.profile_id)
        assert profile.kind == "patient"
        assert profile.traits["gender"] == "female" and profile.traits["birth_date"] == "1968-04-02"
        assert has_consent(profile.id, "marketing", "sms")
        assert has_consent(profile.id, "health_data")
        member = db.session.scalar(sa.select(Member).where(Member.card_no == "C0001"))
        assert member.store_code == "LBX-CS-001" and member.consents == {
            "health_data": True,
            "sms": True,
        }
        # No personal data in the audit log or on the member row.
        details = str(db.session.scalars(sa.select(AuditEntry.details)).all())
        assert "13800138001" not in details and "王芳" not in details


def test_same_file_twice_changes_nothing(loyalty):
    loyalty.sync(loyalty.a, MEMBERS)
    with loyalty.app.app_context():
        events = db.session.scalar(sa.select(sa.func.count()).select_from(Event))
        profiles = db.session.scalar(sa.select(sa.func.count()).select_from(Profile))
    again = loyalty.sync(loyalty.a, MEMBERS).get_json()
    assert (again["created"], again["updated"], again["unchanged"], again["rejected"]) == (
        0,
        0,
        2,
        4,
    )
    with loyalty.app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Event)) == events
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Profile)) == profiles


def test_changed_row_is_updated_and_withdrawn_consent_recorded(loyalty):
    loyalty.sync(loyalty.a, MEMBERS[:1])
    changed = {**MEMBERS[0], "consents": {"sms": False, "health_data": True}}
    body = loyalty.sync(loyalty.a, [changed]).get_json()
    assert body["results"][0]["status"] == "updated"
    with loyalty.app.app_context():
        pid = db.session.scalar(
            sa.select(Identity.profile_id).where(Identity.value_index == "C0001")
        )
        assert not has_consent(pid, "marketing", "sms")
        assert has_consent(pid, "health_data")


def test_members_merge_with_existing_profiles_by_phone(loyalty):
    pa = loyalty.member(loyalty.a, "A-1", "13900000001")
    pb = loyalty.member(loyalty.b, "B-1", "139 0000 0001")
    assert pa == pb  # one person, a card at each chain


def test_csv_upload_with_pos_column_names(loyalty):
    csv_text = (
        "会员卡号,手机号,姓名,性别,生日,consent_sms\n"
        "K100,13800000100,赵敏,女,1980-01-01,1\n"
        "K101,13800000101,钱进,男,1975-05-05,0\n"
        "K102,not-a-phone,孙丽,女,,\n"
    )
    response = loyalty.client.post(
        "/api/v1/partner/members",
        data=csv_text.encode("gb18030"),
        content_type="text/csv",
        headers=loyalty.a.headers,
    )
    assert response.status_code == 200, response.get_json()
    statuses = [r["status"] for r in response.get_json()["results"]]
    assert statuses == ["created", "created", "rejected"]


def test_too_many_rows_are_refused(loyalty):
    rows = [{"card_no": f"X{i}"} for i in range(10_001)]
    response = loyalty.sync(loyalty.a, rows)
    assert response.status_code == 422
    assert "10,000" in response.get_json()["message"]


def test_large_upload_runs_as_a_background_job_with_progress(loyalty):
    loyalty.app.config["LOYALTY_SYNC_INLINE_ROWS"] = 5
    rows = [{"card_no": f"BG{i:04d}", "phone": f"1370000{i:04d}"} for i in range(12)]
    rows.append({"card_no": "BAD", "phone": "1"})
    response = loyalty.sync(loyalty.a, rows)
    assert response.status_code == 202
    sync_id = response.get_json()["sync_id"]
    from cdp.loyalty.tasks import run_member_sync

    with loyalty.app.app_context():
        assert run_member_sync(sync_id) == "succeeded"
        sync = db.session.get(MemberSync, sync_id)
        assert sync.rows_encrypted is None and sync.job_id is not None
    status = loyalty.client.get(
        f"/api/v1/partner/member-syncs/{sync_id}", headers=loyalty.a.headers
    )
    body = status.get_json()
    assert (body["status"], body["processed"], body["created"], body["rejected"]) == (
        "succeeded",
        13,
        12,
        1,
    )
    rejected = loyalty.client.get(
        f"/api/v1/partner/member-syncs/{sync_id}/rejected", headers=loyalty.a.headers
    ).get_json()["items"]
    assert rejected[0]["index"] == 12 and rejected[0]["row"]["card_no"] == "BAD"
    from cdp.models import JobRun

    with loyalty.app.app_context():
        job = db.session.get(JobRun, sync.job_id)
        assert (job.status, job.progress, job.total) == ("succeeded", 13, 13)


# --- changes feed -----------------------------------------------------------------------------


def test_changes_feed_pages_with_a_cursor(loyalty):
    profile_id = loyalty.member(loyalty.a, "F-1", "13600000001")
    campaign = loyalty.campaign()
    loyalty.coupon(campaign, profile_id)
    feed = loyalty.client.get("/api/v1/partner/members/changes", headers=loyalty.a.headers)
    body = feed.get_json()
    assert [i["type"] for i in body["items"]] == ["coupon_issued"]
    assert body["items"][0]["card_no"] == "F-1"
    cursor = body["next_cursor"]
    empty = loyalty.client.get(
        f"/api/v1/partner/members/changes?since={cursor}", headers=loyalty.a.headers
    ).get_json()
    assert empty["items"] == [] and empty["next_cursor"] == cursor
    with loyalty.app.app_context():
        set_consent(SYSTEM, profile_id, "marketing", "sms", "withdrawn")
    after = loyalty.client.get(
        f"/api/v1/partner/members/changes?since={cursor}", headers=loyalty.a.headers
    ).get_json()
    assert [(i["type"], i["data"]["channel"]) for i in after["items"]] == [
        ("consent_withdrawn", "sms")
    ]
    # Partner B has no member here: nothing in its feed.
    other = loyalty.client.get("/api/v1/partner/members/changes", headers=loyalty.b.headers)
    assert other.get_json()["items"] == []
    bad = loyalty.client.get(
        "/api/v1/partner/members/changes?since=nonsense", headers=loyalty.a.headers
    )
    assert bad.status_code == 422


# --- coupons at the till ----------------------------------------------------------------------


def test_lookup_redeem_and_void(loyalty):
    profile_id = loyalty.member(loyalty.a, "T-1", "13500000001")
    code = loyalty.coupon(loyalty.campaign(min_spend=20), profile_id)
    c, h = loyalty.client, loyalty.a.headers
    found = c.get("/api/v1/partner/coupons?member=T-1", headers=h).get_json()
    assert [i["code"] for i in found["items"]] == [code]
    by_phone = c.post("/api/v1/partner/coupons/lookup", json={"phone": "13500000001"}, headers=h)
    assert by_phone.get_json()["member"] == "T-1"
    redeem = {"store_code": "LBX-CS-001", "order_id": "O-1", "amount": "58.00"}
    too_small = c.post(
        f"/api/v1/partner/coupons/{code}/redeem", json={**redeem, "amount": 5}, headers=h
    )
    assert too_small.status_code == 422
    done = c.post(f"/api/v1/partner/coupons/{code}/redeem", json=redeem, headers=h)
    assert done.status_code == 201, done.get_json()
    assert done.get_json()["discount"] == "10.00"
    again = c.post(f"/api/v1/partner/coupons/{code}/redeem", json=redeem, headers=h)
    assert again.status_code == 409
    assert "already redeemed by your order 'O-1'" in again.get_json()["message"]
    assert c.get("/api/v1/partner/coupons?member=T-1", headers=h).get_json()["items"] == []
    void = c.post(f"/api/v1/partner/redemptions/{done.get_json()['id']}/void", json={}, headers=h)
    assert void.status_code == 200 and void.get_json()["voided_at"]
    assert (
        c.post(f"/api/v1/partner/coupons/{code}/redeem", json=redeem, headers=h).status_code == 201
    )
    with loyalty.app.app_context():
        # Redemptions' events follow in batches (the loyalty-events job); a void settles first.
        assert settle_redemptions() == 1
        names = db.session.scalars(
            sa.select(Event.name).where(Event.profile_id == profile_id).order_by(Event.id)
        ).all()
        assert names[-4:] == [
            "coupon_issued",
            "coupon_redeemed",
            "coupon_redemption_voided",
            "coupon_redeemed",
        ]


def test_void_window_is_enforced(loyalty):
    profile_id = loyalty.member(loyalty.a, "W-1", "13500000002")
    code = loyalty.coupon(loyalty.campaign(), profile_id)
    h = loyalty.a.headers
    rid = loyalty.client.post(
        f"/api/v1/partner/coupons/{code}/redeem",
        json={"store_code": "LBX-CS-001", "order_id": "O-9"},
        headers=h,
    ).get_json()["id"]
    with loyalty.app.app_context():
        redemption = db.session.get(Redemption, rid)
        redemption.redeemed_at -= timedelta(days=2)
        db.session.commit()
    late = loyalty.client.post(f"/api/v1/partner/redemptions/{rid}/void", json={}, headers=h)
    assert late.status_code == 409 and "too late" in late.get_json()["message"]


def test_typo_in_a_code_is_refused_before_any_lookup(loyalty):
    profile_id = loyalty.member(loyalty.a, "Y-1", "13500000003")
    code = loyalty.coupon(loyalty.campaign(), profile_id)
    raw = code.replace("-", "")
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    wrong = raw[:3] + alphabet[(alphabet.index(raw[3]) + 1) % 32] + raw[4:]
    response = loyalty.client.get(f"/api/v1/partner/coupons/{wrong}", headers=loyalty.a.headers)
    assert response.status_code == 422 and "typo" in response.get_json()["message"]
    lower = loyalty.client.get(f"/api/v1/partner/coupons/{raw.lower()}", headers=loyalty.a.headers)
    assert lower.status_code == 200


def test_fifty_concurrent_redeems_give_one_success(loyalty):
    profile_id = loyalty.member(loyalty.a, "R-1", "13500000004")
    code = loyalty.coupon(loyalty.campaign(), profile_id)
    statuses: list[int] = []
    barrier = threading.Barrier(50)

    def redeem(n: int):
        client = loyalty.app.test_client()
        barrier.wait()
        response = client.post(
            f"/api/v1/partner/coupons/{code}/redeem",
            json={"store_code": "LBX-CS-001", "order_id": f"O-{n}", "amount": 30},
            headers=loyalty.a.headers,
        )
        statuses.append(response.status_code)

    threads = [threading.Thread(target=redeem, args=(n,)) for n in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [201] + [409] * 49
    with loyalty.app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Redemption)) == 1


def test_marketer_user_cannot_use_partner_role_and_partner_role_user_has_no_ui(loyalty, client):
    make_user(loyalty.app, "partner", "pos@test.cn")
    from tests.conftest import AuthActions

    AuthActions(client, loyalty.app).login("pos@test.cn")
    assert client.get("/loyalty").status_code == 403


def test_a_withdrawal_at_one_chain_reaches_the_other_chains_feed(loyalty):
    member = {"card_no": "S-1", "phone": "13100000001", "consents": {"sms": True}}
    loyalty.sync(loyalty.a, [member])
    loyalty.sync(loyalty.b, [{**member, "card_no": "S-9"}])
    loyalty.sync(loyalty.b, [{**member, "card_no": "S-9", "consents": {"sms": False}}])
    feed_a = loyalty.client.get("/api/v1/partner/members/changes", headers=loyalty.a.headers)
    assert [(i["card_no"], i["type"]) for i in feed_a.get_json()["items"]] == [
        ("S-1", "consent_withdrawn")
    ]
    feed_b = loyalty.client.get("/api/v1/partner/members/changes", headers=loyalty.b.headers)
    assert feed_b.get_json()["items"] == []  # its own sync is not echoed back


def test_committed_loyalty_events_are_handed_off_in_bulk(loyalty):
    from cdp.loyalty.tasks import hand_off_events
    from cdp.models import OutboxBatch

    profile_id = loyalty.member(loyalty.a, "Q-1", "13100000002")
    loyalty.coupon(loyalty.campaign(), profile_id)
    with loyalty.app.app_context():
        assert hand_off_events() == 1
        assert hand_off_events() == 0
        batch = db.session.scalar(
            sa.select(OutboxBatch).where(OutboxBatch.source_id == "src_loyalty")
        )
        assert batch.enqueued_at is not None
        from cdp.ingest.tasks import process_batch

        assert process_batch(batch.id) == "processed"


def test_each_partner_key_has_its_own_rate_limit(loyalty):
    """A noisy till system gets 429 with Retry-After; the other partner is not slowed."""
    loyalty.app.config["PARTNER_RATE_LIMIT"] = "5 per minute"
    c = loyalty.client
    codes = [c.get("/api/v1/partner/me", headers=loyalty.a.headers).status_code for _ in range(7)]
    assert codes == [200] * 5 + [429, 429]
    refused = c.get("/api/v1/partner/me", headers=loyalty.a.headers)
    assert refused.headers.get("Retry-After") and refused.get_json()["message"]
    assert c.get("/api/v1/partner/me", headers=loyalty.b.headers).status_code == 200


def test_openapi_declares_partner_keys_on_the_partner_api(loyalty):
    spec = loyalty.client.get("/api/openapi.json").get_json()
    assert spec["components"]["securitySchemes"]["partnerKey"]["scheme"] == "bearer"
    partner_ops = [op for path, ops in spec["paths"].items() if path.startswith("/api/v1/partner")
                   for op in ops.values() if isinstance(op, dict) and "responses" in op]  # fmt: skip
    assert partner_ops and all(op["security"] == [{"partnerKey": []}] for op in partner_ops)
    other = spec["paths"]["/api/v1/coupon-campaigns"]
    assert all("security" not in op for op in other.values() if isinstance(op, dict))
