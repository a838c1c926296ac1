"""The ``cdp`` command line: --json output for scripts, and clear errors for bad input."""

import json
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from cdp.auth import accounts, tokens
from cdp.db import db
from cdp.models import Source
from cdp.sources import source_for_write_key, source_options


def invoke_json(runner, *args):
    result = runner.invoke(args=[*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_users_create_prints_one_json_object_with_generated_password(app, runner):
    created = invoke_json(runner, "users", "create", "--email", "M@Test.cn", "--role", "marketer")
    assert created["email"] == "m@test.cn"
    assert created["role"] == "marketer"
    with app.app_context():
        from cdp.actors import SYSTEM

        assert accounts.authenticate(SYSTEM, "m@test.cn", created["password"]) is not None


def test_tokens_create_prints_a_working_token(app, runner, client):
    invoke_json(runner, "users", "create", "--email", "a@test.cn", "--role", "admin")
    token = invoke_json(runner, "tokens", "create", "--email", "a@test.cn")["token"]
    assert token.startswith(tokens.TOKEN_PREFIX)
    response = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert response.json["email"] == "a@test.cn"


def test_sources_create_prints_id_write_key_and_urls(app, runner):
    out = invoke_json(
        runner, "sources", "create", "--name", "官网", "--kind", "http", "--option", "channel=web"
    )
    assert out["id"].startswith("src_")
    assert out["urls"]["track"] == "http://127.0.0.1:5000/v1/track"
    with app.app_context():
        source = source_for_write_key(out["write_key"])
        assert source.id == out["id"]
        assert source_options(source) == {"channel": "web"}
        # Options are stored encrypted, not as readable JSON.
        raw = db.session.scalar(sa.select(Source.options_encrypted))
        assert b"channel" not in raw


def test_bad_input_names_the_field_and_writes_nothing(app, runner):
    bad_kind = runner.invoke(args=["sources", "create", "--name", "x", "--kind", "fax"])
    assert bad_kind.exit_code == 2
    assert "unknown source kind 'fax'" in bad_kind.output
    bad_option = runner.invoke(
        args=["sources", "create", "--name", "x", "--kind", "http", "--option", "colour=red"]
    )
    assert bad_option.exit_code == 2
    assert "options" in bad_option.output
    bad_email = runner.invoke(args=["users", "create", "--email", "nope", "--role", "admin"])
    assert bad_email.exit_code == 2
    assert "(email)" in bad_email.output
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Source)) == 0


def test_duplicate_user_is_a_clean_error(runner):
    runner.invoke(args=["users", "create", "--email", "a@test.cn", "--role", "admin"])
    again = runner.invoke(args=["users", "create", "--email", "a@test.cn", "--role", "admin"])
    assert again.exit_code == 2
    assert "already exists" in again.output


def test_worker_without_redis_explains_what_to_do(runner):
    result = runner.invoke(args=["worker", "--burst"])
    assert result.exit_code == 2
    assert "CDP_REDIS_URL" in result.output


def test_console_script_is_installed_and_lists_commands():
    cdp = Path(sys.executable).parent / "cdp"
    result = subprocess.run([str(cdp), "--help"], capture_output=True, text=True, check=True)
    for command in ("db", "seed-demo", "users", "tokens", "sources", "worker", "serve"):
        assert command in result.stdout
