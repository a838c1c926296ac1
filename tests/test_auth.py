"""Logging in and out, sessions, CSRF, rate limits and the permission table."""

import re

import pytest
import sqlalchemy as sa

from cdp.auth import accounts
from cdp.auth.permissions import ROLE_PERMISSIONS, allowed
from cdp.db import db
from cdp.models import AuditEntry, User, UserSession
from tests.conftest import TEST_PASSWORD, AuthActions, csrf_token_from, make_app, make_user

ALERT = re.compile(r'class="alert error"[^>]*>([^<]+)<')


def test_login_redirects_to_dashboard_and_logout_ends_session(auth, admin, client):
    response = auth.login()
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    assert client.get("/").status_code == 200
    auth.logout()
    assert client.get("/").status_code == 302  # back to the login page


def test_session_cookie_replayed_after_logout_is_refused(app, auth, admin):
    auth.login()
    cookie = auth.client.get_cookie(app.config["SESSION_COOKIE_NAME"])
    auth.logout()
    # A copy of the old cookie (e.g. stolen) must not work: the server-side session is gone.
    thief = app.test_client()
    thief.set_cookie(app.config["SESSION_COOKIE_NAME"], cookie.value)
    response = thief.get("/")
    assert response.status_code == 302
    assert "/login" in response.headers["Location"]
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(UserSession)) == 0


def test_session_cookie_is_httponly_and_samesite_lax(app, auth, admin):
    response = auth.login()
    header = [h for h in response.headers.getlist("Set-Cookie") if "cdp_session" in h][0]
    assert "HttpOnly" in header
    assert "SameSite=Lax" in header


def test_wrong_password_gives_generic_error_and_is_audited(app, auth, admin):
    bad_password = auth.login(password="wrong password!")
    unknown_user = auth.login(email="nobody@test.cn", password="whatever12345")
    for response in (bad_password, unknown_user):
        assert response.status_code == 401
    # The same message whether the e-mail exists or not (no account enumeration).
    messages = [
        ALERT.search(r.get_data(as_text=True)).group(1) for r in (bad_password, unknown_user)
    ]
    assert messages[0] == messages[1]
    with app.app_context():
        denied = db.session.scalars(
            sa.select(AuditEntry).where(
                AuditEntry.action == "auth.login", AuditEntry.outcome == "denied"
            )
        ).all()
        assert len(denied) == 2
        assert denied[0].object_id == str(admin)
        assert denied[1].object_id is None
        # No personal data in the audit trail.
        assert all("test.cn" not in str(e.details) for e in denied)


def test_repeated_failed_logins_are_rate_limited(app, auth, admin):
    statuses = [auth.login(password=f"wrong-{i}-password").status_code for i in range(11)]
    assert statuses[:10] == [401] * 10
    assert statuses[10] == 429
    # Even the right password is refused while the limit holds.
    assert auth.login().status_code == 429


def test_successful_logins_do_not_count_towards_the_limit(app, auth, admin):
    for _ in range(12):
        assert auth.login().status_code == 302
        auth.logout()


def test_login_without_csrf_token_is_refused(client, admin):
    response = client.post("/login", data={"email": "admin@test.cn", "password": TEST_PASSWORD})
    assert response.status_code == 400
    assert client.get("/").status_code == 302


def test_logout_requires_post_with_csrf(auth, admin, client):
    auth.login()
    assert client.get("/logout").status_code == 405
    client.post("/logout", data={})  # no token: ignored
    assert client.get("/").status_code == 200


def test_login_does_not_follow_offsite_next(auth, admin, client):
    page = client.get("/login?next=//evil.example/steal")
    token = csrf_token_from(page.get_data(as_text=True))
    response = client.post(
        "/login",
        data={
            "email": "admin@test.cn",
            "password": TEST_PASSWORD,
            "csrf_token": token,
            "next": "//evil.example/steal",
        },
    )
    assert response.headers["Location"] == "/"


def test_deactivated_user_is_logged_out_and_cannot_log_in(app, auth, admin):
    auth.login()
    with app.app_context():
        from cdp.actors import SYSTEM

        accounts.set_active(SYSTEM, admin, False)
    assert auth.client.get("/").status_code == 302
    assert auth.login().status_code == 401


def test_passwords_are_stored_as_argon2id(app, admin):
    with app.app_context():
        stored = db.session.get(User, admin).password_hash
    assert stored.startswith("$argon2id$")
    assert "m=19456" in stored
    assert TEST_PASSWORD not in stored


def test_short_password_is_refused(app):
    from cdp.exceptions import ValidationFailed

    with pytest.raises(ValidationFailed) as excinfo:
        make_user(app, "marketer", password="short")
    assert excinfo.value.field == "password"


def test_permission_table_gives_each_role_its_areas():
    assert allowed("admin", "users:edit")
    assert not allowed("admin", "partner:api")
    assert allowed("reviewer", "content:review")
    assert not allowed("marketer", "content:review")
    assert not allowed("marketer", "audit:view")
    assert allowed("analyst", "models:edit")
    assert ROLE_PERMISSIONS["partner"] == {"partner:api"}
    assert not allowed(None, "dashboard:view")


@pytest.mark.services
def test_login_rate_limit_is_shared_through_redis_across_processes(app, redis_url):
    """Two app instances (two gunicorn workers) count failed logins in the same Redis."""
    database = app.config["SQLALCHEMY_DATABASE_URI"]
    apps = [make_app(database, REDIS_URL=redis_url) for _ in range(2)]
    assert apps[0].config["RATELIMIT_STORAGE_URI"] == redis_url
    actors = [AuthActions(a.test_client(), a) for a in apps]
    statuses = [actors[i % 2].login(password=f"wrong-{i}-password").status_code for i in range(11)]
    assert statuses[:10] == [401] * 10
    assert statuses[10] == 429
