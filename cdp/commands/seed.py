"""``cdp seed-demo``: fill the database with demo sources, users, patients, doctors and events."""

from __future__ import annotations

import os
import time
from pathlib import Path

import click
import orjson
from flask import current_app
from flask.cli import with_appcontext

from cdp.actors import SYSTEM, Actor
from cdp.auth import accounts
from cdp.auth.passwords import verify_password
from cdp.commands.output import domain_errors, emit
from cdp.seed import demo, vocab

ADMIN_EMAIL = vocab.DEMO_USERS[0][0]
CREDENTIALS_FILE = "demo-admin.txt"
ALREADY_SEEDED = "Database already has data; not seeding."


def credentials_path() -> Path:
    return Path(current_app.instance_path) / CREDENTIALS_FILE


def _read_credentials(path: Path) -> dict[str, str]:
    try:
        data = orjson.loads(path.read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_credentials(path: Path, credentials: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(orjson.dumps(credentials, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    os.chmod(path, 0o600)  # it may have existed with wider rights


def ensure_demo_users(actor: Actor, path: Path | None = None) -> dict[str, str | None]:
    """Create the missing demo users; return e-mail -> password, None when not on file.

    Generated passwords are kept in the instance folder (mode 600) so that later runs
    can print the demo login again.
    """
    path = path or credentials_path()
    credentials = _read_credentials(path)
    passwords: dict[str, str | None] = {}
    created = False
    for email, role, name in vocab.DEMO_USERS:
        user = accounts.find_user(email)
        if user is None:
            _user, credentials[email] = accounts.create_user(actor, email, role, name=name)
            created = True
        elif not verify_password(user.password_hash, credentials.get(email, "")):
            credentials.pop(email, None)  # left over from an older database: not the password
        passwords[email] = credentials.get(email)
    if created:
        _write_credentials(path, credentials)
    return passwords


def _login_line(password: str | None) -> str:
    if password:
        return f"Demo login: {ADMIN_EMAIL} / {password}"
    return (
        f"Demo login: {ADMIN_EMAIL} (password not on file: {credentials_path()} "
        "is missing or out of date)"
    )


def _progress_printer():
    started = time.monotonic()

    def report(done: int, total: int, message: str) -> None:
        # stderr, so that with --json stdout holds exactly one object.
        elapsed = time.monotonic() - started
        click.echo(f"  [{done * 100 // max(total, 1):3d}%] {message} ({elapsed:.0f}s)", err=True)

    return report


@click.command("seed-demo")
@click.option("--patients", default=2000, show_default=True, type=click.IntRange(min=0))
@click.option("--doctors", default=200, show_default=True, type=click.IntRange(min=0))
@click.option("--seed", default=42, show_default=True, type=int, help="Same seed, same data.")
@click.option("--if-empty", is_flag=True, help="Do nothing when any profile exists.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_appcontext
@domain_errors
def seed_demo(patients, doctors, seed, if_empty, as_json):
    """Add demo users, sources, patients, doctors and a year of events."""
    if current_app.config.get("PRODUCTION"):
        raise click.UsageError("seed-demo adds fake people and known logins; not in production")
    passwords = ensure_demo_users(SYSTEM)
    admin = {"email": ADMIN_EMAIL, "password": passwords[ADMIN_EMAIL]}
    if if_empty and demo.database_has_profiles():
        payload = {"patients": 0, "doctors": 0, "events": 0, "sources": [], "admin": admin}
        emit(
            as_json, {**payload, "skipped": True}, [ALREADY_SEEDED, _login_line(admin["password"])]
        )
        return
    click.echo(f"Seeding {patients} patients and {doctors} doctors (seed {seed})...", err=True)
    result = demo.seed_demo(SYSTEM, patients, doctors, seed, progress=_progress_printer())
    payload = {key: result[key] for key in ("patients", "doctors", "events", "sources")}
    payload.update(admin=admin, skipped=False, write_key=result["write_key"])
    lines = [
        f"Seeded {result['patients']} patients, {result['doctors']} doctors, "
        f"{result['identities']} identities and {result['events']} events.",
        f"Sources: {', '.join(result['sources'])}",
    ]
    if result["write_key"]:
        lines.append(f"Write key of the HTTP source (shown once): {result['write_key']}")
    lines.append(_login_line(admin["password"]))
    emit(as_json, payload, lines)
