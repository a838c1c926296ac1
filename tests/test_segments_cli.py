"""`cdp segments`: list, create, refresh with progress, verify, schema."""

from __future__ import annotations

import orjson
import sqlalchemy as sa

from cdp.actors import SYSTEM
from cdp.db import db
from cdp.models import JobRun
from segments import service
from tests.test_segments_membership import person, send


def seed(app) -> int:
    from cdp.sources import create_source

    with app.app_context():
        source, _ = create_source(SYSTEM, "CRM", "http")
        send(source.id, *person("a", "上海", reads=2), *person("b", "北京"))
        rule = {"rule": {"type": "trait", "trait": "city", "op": "equals", "value": "上海"}}
        return service.create_segment(SYSTEM, "上海", rule).id


def test_refresh_prints_progress_and_records_a_job(app, runner):
    sid = seed(app)
    result = runner.invoke(args=["segments", "refresh", "--id", str(sid)])
    assert result.exit_code == 0, result.output
    assert f"[1/1] #{sid} 上海: 1 members, +1 −0" in result.stderr
    assert "succeeded" in result.stdout
    listed = runner.invoke(args=["segments", "list", "--json"])
    payload = orjson.loads(listed.stdout)
    assert [(s["id"], s["size"]) for s in payload["segments"]] == [(sid, 1)]
    assert "上海" in runner.invoke(args=["segments", "list"]).stdout
    with app.app_context():
        job = db.session.scalar(sa.select(JobRun).where(JobRun.kind == "segments-refresh"))
        assert (job.status, job.progress, job.total) == ("succeeded", 1, 1)
    again = orjson.loads(runner.invoke(args=["segments", "refresh", "--json"]).stdout)
    assert again["segments"] == [
        {"id": sid, "size": 1, "entered": 0, "exited": 0, "ms": again["segments"][0]["ms"]}
    ]


def test_create_from_a_file_and_errors_by_path(app, runner, tmp_path):
    good = tmp_path / "good.json"
    good.write_text('{"rule": {"type": "profile_kind", "kind": "hcp"}}', encoding="utf-8")
    created = runner.invoke(args=["segments", "create", "--name", "医生", "--file", str(good)])
    assert created.exit_code == 0, created.output
    bad = tmp_path / "bad.json"
    bad.write_text('{"rule": {"type": "profile_kind", "kind": "nurse"}}', encoding="utf-8")
    refused = runner.invoke(args=["segments", "create", "--name", "x", "--file", str(bad)])
    assert refused.exit_code == 2
    assert "/rule/kind: 'nurse' is not one of" in refused.output


def test_verify_compares_sql_with_the_reference(app, runner):
    sid = seed(app)
    result = runner.invoke(args=["segments", "verify", "--id", str(sid)])
    assert result.exit_code == 0 and "They agree." in result.output


def test_schema_prints_the_published_schema(runner):
    result = runner.invoke(args=["segments", "schema"])
    assert orjson.loads(result.stdout)["title"] == "CarePath CDP segment definition"
