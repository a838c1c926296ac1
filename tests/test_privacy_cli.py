"""`cdp privacy …` and `cdp content …` commands."""

from __future__ import annotations

import orjson
import sqlalchemy as sa

from cdp.actors import SYSTEM
from cdp.db import db
from cdp.ingest.pipeline import ingest
from cdp.models import Profile
from cdp.sources import create_source


def person(app) -> int:
    with app.app_context():
        source = create_source(SYSTEM, "s", "http")[0]
        return ingest(
            source, [{"type": "identify", "userId": "cli", "traits": {"name": "冯晓"}}]
        ).profile_ids[0]


def test_export_and_erase_from_the_command_line(app, runner, tmp_path):
    pid = person(app)
    out = tmp_path / "export.zip"
    result = runner.invoke(
        args=["privacy", "export", "--profile", str(pid), "--format", "zip", "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:2] == b"PK" and oct(out.stat().st_mode)[-3:] == "600"
    printed = runner.invoke(args=["privacy", "export", "--profile", str(pid)])
    assert orjson.loads(printed.stdout_bytes)["profiles"][0]["personal_data"]["name"] == "冯晓"
    refused = runner.invoke(args=["privacy", "erase", "--profile", str(pid)])
    assert refused.exit_code == 2 and "--yes" in refused.output
    erased = runner.invoke(args=["privacy", "erase", "--profile", str(pid), "--yes", "--json"])
    assert erased.exit_code == 0, erased.output
    assert orjson.loads(erased.output)["status"] == "completed"
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Profile)) == 0
    listed = runner.invoke(args=["privacy", "requests"])
    assert "erasure" in listed.output and "export" in listed.output
    missing = runner.invoke(args=["privacy", "export", "--profile", "999"])
    assert missing.exit_code == 2 and "no such profile" in missing.output


def test_retention_rotation_and_content_commands(app, runner, monkeypatch):
    person(app)
    assert runner.invoke(args=["privacy", "retention", "set", "page_view", "90"]).exit_code == 0
    assert "page_view\t90 days" in runner.invoke(args=["privacy", "retention", "list"]).output
    assert runner.invoke(args=["privacy", "retention", "set", "x", "0"]).exit_code == 2
    assert "Nothing to purge." in runner.invoke(args=["privacy", "purge"]).output
    assert runner.invoke(args=["privacy", "rotate-key", "--new-key-env", "NOPE"]).exit_code == 2
    monkeypatch.setenv("NEW_PII", "a-long-enough-new-key-2027")
    rotated = runner.invoke(args=["privacy", "rotate-key", "--new-key-env", "NEW_PII", "--json"])
    assert rotated.exit_code == 0, rotated.output
    assert orjson.loads(rotated.output)["key_id"] == 2
    assert runner.invoke(args=["content", "list"]).exit_code == 0
    assert "0 version(s) expired." in runner.invoke(args=["content", "expire"]).output
