"""The Doctors area: navigation by role, the doctor page, meetings, the rep → manager flow."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from cdp.db import db, utcnow
from cdp.hcp import academic
from cdp.models.hcp import Meeting, Participant
from tests.conftest import csrf_token_from
from tests.test_hcp_engagement import RIGHT, Clinic


@pytest.fixture
def clinic(app):
    # Built in its own app context: an outer one would share flask.g between requests.
    with app.app_context():
        return Clinic(app)


def post(client, page: str, action: str, data: dict | None = None, **kw):
    token = csrf_token_from(client.get(page).get_data(as_text=True))
    return client.post(action, data={"csrf_token": token, **(data or {})}, **kw)


def test_the_doctors_area_is_shown_to_the_roles_that_may_see_it(app, client, auth, clinic):
    auth.login("rep@test.cn")
    home = client.get("/").get_data(as_text=True)
    assert 'href="/doctors"' in home and "医生" in home
    auth.logout()
    auth.login("reviewer@test.cn")
    assert 'href="/doctors"' not in client.get("/").get_data(as_text=True)
    assert client.get("/doctors").status_code == 403
    assert client.get("/doctors/meetings").status_code == 403


def test_a_rep_sees_their_doctor_with_radar_points_and_timeline(app, client, auth, clinic):
    with app.app_context():
        mine, other = clinic.doctor("d1", hospital="华山医院"), clinic.doctor("d2", rep=False)
        meeting = clinic.meeting()
        clinic.attend("d1", meeting.id, minutes=40)
        clinic.quiz("d1", meeting.id, RIGHT)
    auth.login("rep@test.cn")
    listing = client.get("/doctors").get_data(as_text=True)
    assert f"/doctors/{mine}" in listing and f"/doctors/{other}" not in listing
    page = client.get(f"/doctors/{mine}").get_data(as_text=True)
    assert 'data-testid="radar"' in page and "<polygon" in page and "用药方法" in page
    assert "50 / 2,000" in page  # points awarded this year against the annual cap
    assert "糖尿病科室会" in page  # the timeline names the meeting
    assert client.get(f"/doctors/{other}").status_code == 403
    saved = post(client, f"/doctors/{mine}", f"/doctors/{mine}/edit",
                 {"hospital": "华山医院", "department": "内分泌科", "title": "主治医师",
                  "city_tier": "1", "society_role": "none"})  # fmt: skip
    assert saved.status_code == 302
    assert "内分泌科" in client.get(f"/doctors/{mine}").get_data(as_text=True)


def test_plan_a_meeting_then_a_rep_asks_and_a_manager_approves(app, client, auth, clinic):
    with app.app_context():
        doctor = clinic.doctor("d1")
    auth.login("marketer@test.cn")
    start = (utcnow() + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    form = {"topic": "心衰新进展", "kind": "webinar", "starts_at": start,
            "content_version_id": str(clinic.content_id), "min_minutes": "20",
            "points_action": "cme_module_completed", "campaign": "心衰教育"}  # fmt: skip
    created = post(client, "/doctors/meetings/new", "/doctors/meetings/new", form)
    assert created.status_code == 302
    with app.app_context():
        meeting_id = db.session.scalar(sa.select(Meeting.id).where(Meeting.topic == "心衰新进展"))
    auth.logout()
    auth.login("rep@test.cn")
    page = f"/doctors/meetings/{meeting_id}"
    asked = post(
        client, page, f"{page}/invite", {"profile_ids": str(doctor)}, follow_redirects=True
    )
    assert "已提交经理审批：1 位。" in asked.get_data(as_text=True)
    assert client.get("/doctors/meetings/requests").status_code == 403
    auth.logout()
    auth.login("manager@test.cn")
    queue = client.get("/doctors/meetings/requests").get_data(as_text=True)
    with app.app_context():
        row = db.session.scalar(sa.select(Participant))
    assert f'data-testid="approve-{row.id}"' in queue
    post(client, "/doctors/meetings/requests", f"/doctors/meetings/requests/{row.id}/approve")
    with app.app_context():
        assert db.session.get(Participant, row.id).invitation == "invited"
    funnel = client.get(page).get_data(as_text=True)
    assert 'data-testid="funnel"' in funnel


def test_a_bad_quiz_is_shown_back_with_the_reason(app, client, auth, clinic):
    with app.app_context():
        meeting_id = clinic.meeting(quiz=None).id
    auth.login("marketer@test.cn")
    page = f"/doctors/meetings/{meeting_id}"
    response = post(client, page, f"{page}/quiz", {"questions": "[{]"})
    assert response.status_code == 422 and "JSON" in response.get_data(as_text=True)
    bad = '[{"id": "q1", "text": "?", "options": ["a", "b"], "answer": [0], "dimensions": ["x"]}]'
    response = post(client, page, f"{page}/quiz", {"questions": bad})
    assert response.status_code == 422 and "dimensions" in response.get_data(as_text=True)


def test_catalogue_reports_and_campaign_pages(app, client, auth, clinic):
    with app.app_context():
        clinic.doctor("d1")
        meeting = clinic.meeting()
        clinic.quiz("d1", meeting.id, RIGHT)
        academic.create_item(clinic.rep, "J-1", "《中华内分泌代谢杂志》", "journal", 100)
    auth.login("manager@test.cn")
    catalogue = client.get("/doctors/catalogue").get_data(as_text=True)
    assert "中华内分泌代谢杂志" in catalogue
    for path in ("/doctors/reports/reps", "/doctors/reports/campaigns", "/doctors/meetings"):
        assert client.get(path).status_code == 200, path
    campaign = client.get("/doctors/reports/campaigns").get_data(as_text=True)
    assert "2026 Q3 用药教育" in campaign and 'data-testid="improved-product_usage"' in campaign
