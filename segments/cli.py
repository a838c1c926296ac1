"""``cdp segments``: list, create, refresh (with progress), verify, and the published schema."""

from __future__ import annotations

import time

import click
import orjson
from flask.cli import with_appcontext

from cdp.actors import SYSTEM
from cdp.commands.output import domain_errors, emit
from cdp.db import db
from segments import definition as definitions
from segments import service, tasks
from segments.compiler import compile_query
from segments.membership import make_context
from segments.reference import reference_members


@click.group("segments")
def segments_group():
    """Segments: rules compiled to SQL, kept current in real time."""


@segments_group.command("list")
@click.option("--all", "include_archived", is_flag=True, help="Include archived segments.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_appcontext
def list_command(include_archived, as_json):
    """List segments with their size and last refresh."""
    rows = service.list_segments(include_archived)
    payload = {
        "segments": [
            {
                "id": s.id,
                "name": s.name,
                "status": s.status,
                "size": s.size,
                "health_data": s.health_data,
                "realtime": s.realtime,
                "refreshed_at": s.refreshed_at.isoformat() if s.refreshed_at else None,
            }
            for s in rows
        ]
    }
    lines = [f"{'id':>5}  {'size':>9}  {'refreshed (UTC)':<19}  name"]
    for s in rows:
        when = s.refreshed_at.strftime("%Y-%m-%d %H:%M:%S") if s.refreshed_at else "never"
        flags = (" [health data]" if s.health_data else "") + (
            "" if s.status == "active" else " [archived]"
        )
        lines.append(f"{s.id:>5}  {s.size:>9,}  {when:<19}  {s.name}{flags}")
    emit(as_json, payload, lines)


@segments_group.command("create")
@click.option("--name", required=True)
@click.option("--file", "path", type=click.File("rb"), required=True, help="JSON definition.")
@click.option("--description", default="")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_appcontext
@domain_errors
def create_command(name, path, description, as_json):
    """Create a segment from a JSON definition file (then run `cdp segments refresh`)."""
    try:
        definition = orjson.loads(path.read())
    except orjson.JSONDecodeError as exc:
        raise click.UsageError(f"not JSON: {exc}") from exc
    try:
        segment = service.create_segment(SYSTEM, name, definition, description)
    except definitions.DefinitionInvalid as exc:
        raise click.UsageError(
            "definition is not valid:\n"
            + "\n".join(f"  {p.path}: {p.message}" for p in exc.problems)
        ) from exc
    emit(as_json, {"id": segment.id, "name": segment.name}, [f"Created segment #{segment.id}."])


@segments_group.command("refresh")
@click.option("--id", "segment_ids", type=int, multiple=True, help="Segment id (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_appcontext
@domain_errors
def refresh_command(segment_ids, as_json):
    """Recompute membership now (all active segments, or --id N), printing progress."""
    job = tasks.create_refresh_job(SYSTEM, list(segment_ids) or None)
    ids = list(job.params["segment_ids"])
    started = time.monotonic()

    def progress(done: int, total: int, message: str) -> None:
        elapsed = time.monotonic() - started
        click.echo(f"  [{done}/{total}] {message} ({elapsed:.1f}s)", err=True)

    click.echo(f"Refreshing {len(ids)} segment(s), job #{job.id}...", err=True)
    results = tasks.run_refresh(job.id, ids, progress=progress, reason="cli")
    db.session.refresh(job)
    payload = {
        "job_id": job.id,
        "status": job.status,
        "segments": [
            {
                "id": r.segment_id,
                "size": r.size,
                "entered": r.entered,
                "exited": r.exited,
                "ms": r.ms,
            }
            for r in results
        ],
    }
    emit(as_json, payload, [f"Job #{job.id} {job.status}: {job.message}"])
    if job.status == "failed":
        raise SystemExit(1)


@segments_group.command("verify")
@click.option("--id", "segment_id", type=int, required=True)
@with_appcontext
@domain_errors
def verify_command(segment_id):
    """Compare the SQL answer with the Python reference evaluator (reads every profile)."""
    segment = service.get_segment(segment_id)
    ctx = make_context()
    sql = set(db.session.scalars(compile_query(segment.definition, ctx)))
    reference = reference_members(segment.definition, ctx)
    click.echo(f"SQL {len(sql)}, reference {len(reference)}")
    if sql != reference:
        only_sql, only_ref = sorted(sql - reference)[:10], sorted(reference - sql)[:10]
        raise click.ClickException(f"they differ: only SQL {only_sql}, only reference {only_ref}")
    click.echo("They agree.")


@segments_group.command("schema")
@click.option("--write", is_flag=True, help=f"Write {definitions.SCHEMA_PATH.name}.")
def schema_command(write):
    """Print (or write) the published JSON Schema of segment definitions."""
    text = definitions.schema_text()
    if write:
        definitions.SCHEMA_PATH.write_text(text, encoding="utf-8")
        click.echo(f"Wrote {definitions.SCHEMA_PATH}")
    else:
        click.echo(text, nl=False)
