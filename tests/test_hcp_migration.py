"""Migration 0010 (rep and manager roles, no sessions lost) and the HCP flow on PostgreSQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from flask_migrate import downgrade, upgrade

from cdp.db import db
from cdp.hcp import meetings, reports
from cdp.ingest.tasks import process_pending
from tests.conftest import make_app, migrate
from tests.journey_helpers import profile_of
from tests.test_hcp_engagement import RIGHT, Clinic

USER = sa.text(
    "INSERT INTO users (email, name, role, is_active, created_at) "
    "VALUES (:email, '', :role, true, CURRENT_TIMESTAMP)"
)


def roundtrip(app) -> None:
    with app.app_context():
        upgrade(revision="0009")
        db.session.execute(USER, {"email": "a@test.cn", "role": "admin"})
        db.session.execute(
            sa.text(
                "INSERT INTO user_sessions (id_hash, user_id, created_at, last_seen_at) "
                "SELECT 'h', id, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP FROM users"
            )
        )
        db.session.commit()
        with pytest.raises(sa.exc.IntegrityError):  # not a role yet
            db.session.execute(USER, {"email": "r0@test.cn", "role": "rep"})
        db.session.rollback()
        upgrade(revision="0010")
        db.session.execute(USER, {"email": "r@test.cn", "role": "rep"})
        db.session.execute(USER, {"email": "m@test.cn", "role": "manager"})
        db.session.commit()
        with pytest.raises(sa.exc.IntegrityError):
            db.session.execute(USER, {"email": "x@test.cn", "role": "boss"})
        db.session.rollback()
        # The users table was not rebuilt: its sessions are still there.
        assert db.session.execute(sa.text("SELECT count(*) FROM user_sessions")).scalar() == 1
        db.session.rollback()  # alembic uses its own connection: hold no locks
        downgrade(revision="0009")
        rows = db.session.execute(sa.text("SELECT email, role, is_active FROM users ORDER BY id"))
        assert [tuple(r) for r in rows] == [
            ("a@test.cn", "admin", True),
            ("r@test.cn", "analyst", False),
            ("m@test.cn", "analyst", False),
        ]
        db.session.rollback()
        upgrade()
        db.session.remove()
        db.engine.dispose()


def test_roles_change_on_sqlite(tmp_path):
    roundtrip(make_app(f"sqlite:///{tmp_path}/m.db"))


@pytest.mark.services
def test_roles_change_on_postgresql(postgres_url):
    roundtrip(make_app(postgres_url))


@pytest.mark.services
def test_the_funnel_and_points_on_postgresql(postgres_url):
    """Raw-event JSON filters, event inserts and the points ledger on PostgreSQL."""
    app = make_app(postgres_url)
    migrate(app)
    with app.app_context():
        clinic = Clinic(app)
        meeting = clinic.meeting()
        clinic.doctor("d1")
        clinic.doctor("d2", verified=False)
        meetings.request_invitations(clinic.manager, meeting.id, [profile_of("d1")])
        for name in ("d1", "d2"):
            clinic.send(name, "hcp_meeting_registered", 55, meeting_id=str(meeting.id))
            clinic.attend(name, meeting.id, minutes=40)
            clinic.quiz(name, meeting.id, RIGHT)
        process_pending()
        report = reports.meeting_report(clinic.manager, meeting.id)
        assert {s["stage"]: s["raw"] for s in report["stages"]} == {
            "invited": 1, "registered": 2, "joined": 2, "attended": 2, "quiz": 2, "points": 1,
        }  # fmt: skip
        assert report["reconciled"]
        db.session.remove()
        db.engine.dispose()
