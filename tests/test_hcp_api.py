"""/api/v1/hcp: permissions by role, a rep's own doctors, the approval flow, 4xx on bad input."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from cdp.auth.permissions import allowed
from cdp.db import utcnow
from cdp.hcp import doctors
from tests.conftest import make_user
from tests.test_api import bearer, issue_token
from tests.test_hcp_engagement import QUIZ, RIGHT, Clinic
from tests.test_permissions_matrix import api_endpoints

API = "/api/v1/hcp"


@pytest.fixture
def clinic(app):
    # Built in its own app context: an outer one would share flask.g between requests.
    with app.app_context():
        return Clinic(app)


@pytest.fixture
def headers(app, clinic):
    def of(actor):
        return bearer(issue_token(app, actor.user_id))

    return of


def meeting_body(clinic, **extra) -> dict:
    now = utcnow()
    return {
        "topic": "高血压科室会",
        "starts_at": (now - timedelta(hours=1)).isoformat(),
        "ends_at": (now + timedelta(hours=1)).isoformat(),
        "content_version_id": clinic.content_id,
        "campaign": "Q3",
        **extra,
    }


def test_roles_without_the_permission_get_403(app, client, clinic, headers):
    reviewer = headers(clinic.team.reviewer)
    assert client.get(f"{API}/doctors", headers=reviewer).status_code == 403
    rep = headers(clinic.rep)
    assert client.get(f"{API}/invitation-requests", headers=rep).status_code == 403
    body = {"tier": "general", "reason": "x"}
    assert client.put(f"{API}/doctors/1/tier", json=body, headers=rep).status_code == 403
    marketer = headers(clinic.team.marketer)
    assert client.post(f"{API}/academic-items/1/status", json={"status": "approved"},
                       headers=marketer).status_code == 403  # fmt: skip
    assert client.get(f"{API}/doctors").status_code == 401


def test_a_rep_sees_and_changes_only_their_own_doctors(app, client, clinic, headers):
    with app.app_context():
        mine, other = clinic.doctor("d1"), clinic.doctor("d2", rep=False)
    rep = headers(clinic.rep)
    listed = client.get(f"{API}/doctors", headers=rep).json["items"]
    assert [d["profile_id"] for d in listed] == [mine]
    assert client.get(f"{API}/doctors/{other}", headers=rep).status_code == 403
    response = client.patch(f"{API}/doctors/{mine}", json={"title": "主治医师"}, headers=rep)
    assert response.status_code == 200 and response.json["title"] == "主治医师"
    denied = client.patch(f"{API}/doctors/{other}", json={"title": "主治医师"}, headers=rep)
    assert denied.status_code == 403
    manager = headers(clinic.manager)
    assert len(client.get(f"{API}/doctors", headers=manager).json["items"]) == 2
    doctor = client.get(f"{API}/doctors/{mine}", headers=rep).json
    assert doctor["points"]["annual_cap"] == 2000
    assert [k["dimension"] for k in doctor["knowledge"]][-1] == "product_usage"


def test_bad_input_is_answered_4xx_never_500(app, client, clinic, headers):
    marketer = headers(clinic.team.marketer)
    cases = [
        ("post", f"{API}/meetings", {"starts_at": utcnow().isoformat()}, 422),  # no topic
        ("post", f"{API}/meetings", meeting_body(clinic, starts_at="2026-07-01T10:00:00"), 422),
        ("post", f"{API}/meetings", meeting_body(clinic, colour="red"), 422),
        ("post", f"{API}/meetings", meeting_body(clinic, content_version_id=99999), 422),
        ("post", f"{API}/meetings", meeting_body(clinic, min_minutes=0), 422),
        ("post", f"{API}/meetings", meeting_body(clinic, points_action="survey_completed"), 422),
        ("get", f"{API}/meetings/424242", None, 404),
        ("put", f"{API}/meetings/424242/quiz", {"questions": QUIZ}, 404),
        ("patch", f"{API}/doctors/1", {"city_tier": 9}, 422),
        ("post", f"{API}/doctors/424242/licence", {"licence": "110000000000001"}, 404),
        ("get", f"{API}/reports/campaign", None, 422),
        ("post", f"{API}/academic-items", {"code": "B", "name": "书", "kind": "car",
                                           "points": 5}, 422),
    ]  # fmt: skip
    for method, path, body, status in cases:
        response = getattr(client, method)(path, json=body, headers=marketer)
        assert response.status_code == status, (path, body, response.json)
        assert response.is_json
    created = client.post(f"{API}/meetings", json=meeting_body(clinic), headers=marketer)
    assert created.status_code == 201
    meeting_id = created.json["id"]
    bad_quiz = [{**QUIZ[0], "dimensions": ["pricing"]}]
    response = client.put(f"{API}/meetings/{meeting_id}/quiz", json={"questions": bad_quiz},
                          headers=marketer)  # fmt: skip
    assert response.status_code == 422
    assert "quiz.0.dimensions" in response.json["errors"]


def test_request_approve_register_answer_and_award_through_the_api(app, client, clinic, headers):
    with app.app_context():
        doctor = clinic.doctor("d1")
        unverified = clinic.doctor("d2", verified=False)
    marketer, rep, manager = (
        headers(a) for a in (clinic.team.marketer, clinic.rep, clinic.manager)
    )
    meeting_id = client.post(f"{API}/meetings", json=meeting_body(clinic), headers=marketer).json[
        "id"
    ]
    assert client.put(f"{API}/meetings/{meeting_id}/quiz", json={"questions": QUIZ},
                      headers=marketer).status_code == 200  # fmt: skip
    asked = client.post(f"{API}/meetings/{meeting_id}/invitations",
                        json={"profile_ids": [doctor, unverified]}, headers=rep)  # fmt: skip
    assert [i["invitation"] for i in asked.json["items"]] == ["requested", "requested"]
    queue = client.get(f"{API}/invitation-requests", headers=manager).json["items"]
    for item in queue:
        decided = client.post(f"{API}/invitation-requests/{item['id']}/decision",
                              json={"approve": True}, headers=manager)  # fmt: skip
        assert decided.json["invitation"] == "invited"
    again = client.post(f"{API}/invitation-requests/{queue[0]['id']}/decision",
                        json={"approve": True}, headers=manager)  # fmt: skip
    assert again.status_code == 409
    registered = client.post(f"{API}/meetings/{meeting_id}/registrations",
                             json={"profile_id": doctor}, headers=rep)  # fmt: skip
    assert registered.status_code == 201
    with app.app_context():
        clinic.attend("d1", meeting_id, minutes=40, ago=45)
        clinic.attend("d2", meeting_id, minutes=40, ago=45)
    for profile_id in (doctor, unverified):
        answered = client.post(f"{API}/meetings/{meeting_id}/quiz-submissions",
                               json={"profile_id": profile_id, "answers": RIGHT}, headers=rep)  # fmt: skip
        assert answered.status_code == 201
        assert answered.json["scores"]["product_usage"] == 100.0
    twice = client.post(f"{API}/meetings/{meeting_id}/quiz-submissions",
                        json={"profile_id": doctor, "answers": RIGHT}, headers=rep)  # fmt: skip
    assert twice.status_code == 409
    denied = client.post(f"{API}/meetings/{meeting_id}/awards", json={"profile_id": unverified},
                         headers=rep)  # fmt: skip
    assert denied.status_code == 403 and "verified" in denied.json["message"]
    done = client.post(f"{API}/meetings/{meeting_id}/awards", json={"profile_id": doctor},
                       headers=rep)  # fmt: skip
    assert (done.json["status"], done.json["points"]) == ("awarded", 50)
    report = client.get(f"{API}/meetings/{meeting_id}", headers=manager).json["report"]
    assert report["reconciled"]
    assert {s["stage"]: s["recorded"] for s in report["stages"]} == {
        "invited": 2, "registered": 1, "joined": 2, "attended": 2, "quiz": 2, "points": 1,
    }  # fmt: skip
    campaign = client.get(f"{API}/reports/campaign?campaign=Q3", headers=manager).json
    assert campaign["doctors"] == 2 and campaign["dimensions"]["product_usage"]["assessed"] == 2
    reps = client.get(f"{API}/reports/reps", headers=rep).json["items"]
    assert [(r["doctors"], r["covered"], r["completed"]) for r in reps] == [(2, 2, 2)]
    with app.app_context():
        assert doctors.get_doctor(clinic.manager, doctor).verification == "verified"


@pytest.mark.parametrize("role", ["marketer", "reviewer", "analyst", "rep", "manager"])
def test_every_doctors_endpoint_refuses_exactly_the_roles_without_its_permission(app, client, role):
    headers = bearer(issue_token(app, make_user(app, role, f"{role}-matrix@test.cn")))
    endpoints = {k: v for k, v in api_endpoints(app).items() if k[1].startswith(API)}
    assert len(endpoints) >= 20
    for (method, rule), permission in sorted(endpoints.items()):
        path = re.sub(r"<(?:\w+:)?\w+>", "1", rule)
        status = client.open(path, method=method, json={}, headers=headers).status_code
        if allowed(role, permission):
            assert status not in (401, 403, 500), (role, method, rule, status)
        else:
            assert status == 403, (role, method, rule, status)
