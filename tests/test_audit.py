"""The audit log: written for security events, append-only, and tamper-evident."""

import sqlite3

import pytest
import sqlalchemy as sa

from cdp import audit
from cdp.actors import Actor
from cdp.db import db, transaction
from cdp.models import AuditEntry


def write_entries(app, n=5):
    with app.app_context(), transaction():
        for i in range(n):
            audit.record(Actor(kind="user", user_id=i, ip="10.0.0.1"), "test.action", "thing", i)


def sqlite_path(app) -> str:
    return app.config["SQLALCHEMY_DATABASE_URI"].removeprefix("sqlite:///")


def test_chain_of_untouched_log_verifies(app):
    write_entries(app)
    with app.app_context():
        assert audit.verify_chain() is None
        rows = db.session.scalars(sa.select(AuditEntry).order_by(AuditEntry.id)).all()
        assert rows[0].prev_hash == audit.GENESIS
        assert all(b.prev_hash == a.row_hash for a, b in zip(rows, rows[1:], strict=False))


def test_database_refuses_updates_and_deletes(app):
    write_entries(app, 1)
    with app.app_context():
        with pytest.raises(sa.exc.DatabaseError, match="append-only"):
            db.session.execute(sa.update(AuditEntry).values(action="x"))
        db.session.rollback()
        with pytest.raises(sa.exc.DatabaseError, match="append-only"):
            db.session.execute(sa.delete(AuditEntry))
        db.session.rollback()


def test_row_edited_by_hand_is_detected(app, runner):
    write_entries(app)
    # Someone with direct database access drops the guard and edits row 3.
    conn = sqlite3.connect(sqlite_path(app))
    conn.execute("DROP TRIGGER audit_log_no_update")
    conn.execute("UPDATE audit_log SET object_id = '999' WHERE id = 3")
    conn.commit()
    conn.close()
    with app.app_context():
        assert audit.verify_chain() == 3
    result = runner.invoke(args=["audit", "verify"])
    assert result.exit_code == 1
    assert "row 3" in result.output


def test_deleted_row_is_detected(app):
    write_entries(app)
    conn = sqlite3.connect(sqlite_path(app))
    conn.execute("DROP TRIGGER audit_log_no_delete")
    conn.execute("DELETE FROM audit_log WHERE id = 2")
    conn.commit()
    conn.close()
    with app.app_context():
        assert audit.verify_chain() == 3


def test_login_token_and_user_changes_are_audited(app, runner):
    runner.invoke(args=["users", "create", "--email", "a@test.cn", "--role", "admin"])
    runner.invoke(args=["tokens", "create", "--email", "a@test.cn"])
    runner.invoke(args=["users", "set-role", "--email", "a@test.cn", "--role", "marketer"])
    with app.app_context():
        actions = db.session.scalars(sa.select(AuditEntry.action).order_by(AuditEntry.id)).all()
        details = db.session.scalars(sa.select(AuditEntry.details)).all()
    assert actions == ["user.create", "token.create", "user.role_change"]
    assert all("a@test.cn" not in str(d) for d in details)


@pytest.mark.services
def test_chain_stays_linear_under_concurrent_writers_on_postgresql(postgres_url):
    """Concurrent appends must not fork the chain (they serialise on an advisory lock)."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.conftest import make_app, migrate

    app = make_app(postgres_url)
    migrate(app)

    def append(i):
        with app.app_context():
            with transaction():
                audit.record(Actor(kind="system"), "concurrent", "n", i)
            db.session.remove()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(append, range(40)))
    with app.app_context():
        assert audit.verify_chain() is None
        assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditEntry)) == 40
        with pytest.raises(sa.exc.DatabaseError, match="append-only"):
            db.session.execute(sa.delete(AuditEntry))
        db.session.rollback()
        db.engine.dispose()
