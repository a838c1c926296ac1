"""``cdp privacy …``: export and erase a person's data, retention rules, PII key rotation."""

from __future__ import annotations

import os
import sys
import time

import click
import sqlalchemy as sa
from flask.cli import with_appcontext

from cdp.actors import Actor
from cdp.commands.output import domain_errors, emit
from cdp.db import db
from cdp.models.privacy import PrivacyRequest
from cdp.privacy import erasure, export, keys, retention

CLI_ACTOR = Actor(kind="system", role="admin", request_id="cli:privacy")


@click.group("privacy", help="PIPL data-subject requests, retention and PII keys.")
def privacy_group():
    pass


@privacy_group.command("export")
@click.option("--profile", "profile_id", required=True, type=int)
@click.option("--format", "fmt", type=click.Choice(["json", "zip"]), default="json")
@click.option("--output", type=click.Path(dir_okay=False), help="File to write (default stdout).")
@with_appcontext
@domain_errors
def export_command(profile_id, fmt, output):
    """Export everything held about a person (audited). Zip: one CSV per section."""
    bundle = export.export_person(CLI_ACTOR, profile_id)
    data = export.bundle_zip(bundle) if fmt == "zip" else export.bundle_json(bundle)
    if output:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        click.echo(f"Wrote the export of profile {bundle['profile_id']} to {output}.", err=True)
    elif fmt == "zip" and sys.stdout.isatty():
        raise click.UsageError("a zip goes to a file: pass --output")
    else:
        click.echo(data, nl=False)


@privacy_group.command("erase")
@click.option("--profile", "profile_id", required=True, type=int)
@click.option("--reason", default="")
@click.option("--yes", is_flag=True, help="Confirm: this cannot be undone.")
@click.option("--background", is_flag=True, help="Only queue the job (a worker runs it).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_appcontext
@domain_errors
def erase_command(profile_id, reason, yes, background, as_json):
    """Erase a person's data everywhere, keeping a tombstone (cannot be undone)."""
    if not yes:
        raise click.UsageError("erasure cannot be undone; pass --yes to confirm")
    request = erasure.request_erasure(CLI_ACTOR, profile_id, reason)
    if not background:
        erasure.run_erasure(request.id)
        db.session.expire_all()
        request = db.session.get(PrivacyRequest, request.id)
    payload = {
        "request_id": request.id,
        "profile_id": request.profile_id,
        "status": request.status,
        "job_id": request.job_id,
        "result": request.result,
    }
    emit(as_json, payload, [f"Erasure request {request.id}: {request.status}."])


@privacy_group.command("requests")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 500))
@with_appcontext
def requests_command(limit):
    """List recent export and erasure requests."""
    rows = db.session.scalars(
        sa.select(PrivacyRequest).order_by(PrivacyRequest.id.desc()).limit(limit)
    )
    for r in rows:
        click.echo(
            f"{r.id:>6}  {r.kind:<8} {r.status:<10} profile {r.profile_id}  {r.created_at:%Y-%m-%d %H:%M}"
        )


@privacy_group.group("retention", help="Event retention rules (days per event name; * = default).")
def retention_group():
    pass


@retention_group.command("list")
@with_appcontext
def retention_list():
    for rule in retention.list_rules():
        click.echo(f"{rule.event_name}\t{rule.days} days")


@retention_group.command("set")
@click.argument("event_name")
@click.argument("days", type=int)
@with_appcontext
@domain_errors
def retention_set(event_name, days):
    """Keep events named EVENT_NAME for DAYS days (* for every event without a rule)."""
    retention.set_rule(CLI_ACTOR, event_name, days)
    click.echo(f"Events '{event_name}' are kept {days} days.")


@retention_group.command("delete")
@click.argument("event_name")
@with_appcontext
@domain_errors
def retention_delete(event_name):
    retention.delete_rule(CLI_ACTOR, event_name)
    click.echo(f"Rule for '{event_name}' removed.")


@privacy_group.command("purge")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_appcontext
def purge_command(as_json):
    """Delete events past their retention period now (the worker does it every hour)."""
    purged = retention.purge_expired_events()
    lines = [f"{name}: {count} events deleted" for name, count in purged.items()]
    emit(as_json, {"purged": purged}, lines or ["Nothing to purge."])


@privacy_group.command("rotate-key")
@click.option("--new-key-env", required=True, help="Environment variable holding the new key.")
@click.option("--new-key-id", type=click.IntRange(1, 255), help="Default: current id + 1.")
@click.option("--batch-size", default=keys.BATCH_SIZE, show_default=True, type=click.IntRange(1))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_appcontext
@domain_errors
def rotate_key_command(new_key_env, new_key_id, batch_size, as_json):
    """Re-encrypt all personal data under a new key (resumable; see docs/security.md)."""
    secret = os.environ.get(new_key_env)
    if not secret:
        raise click.UsageError(f"environment variable {new_key_env} is not set")
    started = time.monotonic()

    def progress(column: str, seen: int, total: int) -> None:
        if not as_json:
            percent = 100 * seen // max(total, 1)
            elapsed = time.monotonic() - started
            click.echo(f"[{percent:3d}%] {column} ({seen}/{total}, {elapsed:.0f}s)", err=True)

    result = keys.rotate_key(CLI_ACTOR, secret, new_key_id, batch_size, progress)
    lines = [
        f"Re-encrypted {result['reencrypted']} values under key id {result['key_id']}.",
        "Now restart every process with:",
        f"  CDP_PII_KEY=<the value of {new_key_env}>  CDP_PII_KEY_ID={result['key_id']}",
        "  CDP_PII_INDEX_KEY=<the index key in use before> (blind indexes keep their key)",
        "  CDP_PII_DECRYPT_KEYS=<old id>:<old key> until a re-run reports 0 re-encrypted.",
    ]
    emit(as_json, result, lines)
