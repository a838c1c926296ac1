"""``cdp journeys``: list, show, validate, publish, pause, resume, sweep, and the demo journeys."""

from __future__ import annotations

import click
import orjson
from flask.cli import with_appcontext

from cdp.actors import SYSTEM
from cdp.commands.output import domain_errors, emit
from cdp.queue import tasks as task_queue
from journeys import demo, service, stats, tasks
from journeys.validation import InvalidDefinition, validate

MAX_SWEEP_ROUNDS = 1000  # batches one inline sweep works through before it stops


def _when(at) -> str | None:
    return at.isoformat() if at else None


def _summary(journey) -> dict:
    return {
        "id": journey.id,
        "name": journey.name,
        "status": journey.status,
        "live_version": journey.live_version,
        "test_mode": journey.test_mode,
        "updated_at": _when(journey.updated_at),
    }


def _problem_lines(problems: list[dict]) -> list[str]:
    return [f"{p['path'] or '/'}: {p['message']} ({p['code']})" for p in problems]


def _refuse(problems: list[dict], as_json: bool) -> None:
    """Print every problem and exit 1 (a definition that cannot be published)."""
    emit(as_json, {"valid": False, "problems": problems}, _problem_lines(problems))
    raise SystemExit(1)


@click.group("journeys")
def journeys_group():
    """Journeys: definitions, publishing, the engine's sweep, demo journeys."""


@journeys_group.command("list")
@click.option("--status", type=click.Choice(["draft", "published", "paused", "archived"]))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_appcontext
@domain_errors
def list_command(status, as_json):
    """List journeys, most recently changed first."""
    rows = service.list_journeys(status)
    lines = [f"{'id':>5}  {'status':<10} {'version':>7}  name"]
    for j in rows:
        version = str(j.live_version) if j.live_version else "-"
        lines.append(f"{j.id:>5}  {j.status:<10} {version:>7}  {j.name}")
    emit(as_json, {"journeys": [_summary(j) for j in rows]}, lines)


@journeys_group.command("show")
@click.argument("journey_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_appcontext
@domain_errors
def show_command(journey_id, as_json):
    """Show a journey: its draft definition, status and totals."""
    journey = service.get_journey(journey_id)
    totals = stats.journey_stats(journey_id)["totals"]
    payload = {
        **_summary(journey),
        "description": journey.description,
        "definition": journey.draft,
        "totals": totals,
    }
    lines = [
        f"#{journey.id} {journey.name} [{journey.status}, live version "
        f"{journey.live_version or '-'}]",
        *([journey.description] if journey.description else []),
        "totals: " + ", ".join(f"{key} {value}" for key, value in totals.items()),
        orjson.dumps(journey.draft, option=orjson.OPT_INDENT_2).decode(),
    ]
    emit(as_json, payload, lines)


@journeys_group.command("validate")
@click.argument("file", type=click.File("rb"))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_appcontext
def validate_command(file, as_json):
    """Check a definition (a JSON file, - for stdin); print every problem, exit 1 if any.

    A file holding an API create body ({"name", "definition"}) is read for its definition.
    """
    try:
        definition = orjson.loads(file.read())
    except orjson.JSONDecodeError as exc:
        raise click.UsageError(f"not JSON: {exc}") from exc
    if isinstance(definition, dict) and "definition" in definition and "steps" not in definition:
        definition = definition["definition"]
    problems = validate(definition)
    if problems:
        _refuse(problems, as_json)
    emit(as_json, {"valid": True, "problems": []}, ["valid: no problems"])


@journeys_group.command("publish")
@click.argument("journey_id", type=int)
@click.option("--note", default="", help="What changed (kept with the version).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_appcontext
@domain_errors
def publish_command(journey_id, note, as_json):
    """Validate the draft and publish it as a new version (content versions pinned)."""
    try:
        version = service.publish(SYSTEM, journey_id, note=note)
    except InvalidDefinition as invalid:
        _refuse(invalid.problems, as_json)
    payload = {"id": journey_id, "version": version.number, "status": "published"}
    emit(as_json, payload, [f"Published journey #{journey_id} as version {version.number}."])


def _lifecycle(action, journey_id: int, as_json: bool) -> None:
    journey = action(SYSTEM, journey_id)
    payload = {"id": journey.id, "status": journey.status}
    emit(as_json, payload, [f"Journey #{journey.id} is {journey.status}."])


@journeys_group.command("pause")
@click.argument("journey_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_appcontext
@domain_errors
def pause_command(journey_id, as_json):
    """Stop entries; people inside wait where they are."""
    _lifecycle(service.pause, journey_id, as_json)


@journeys_group.command("resume")
@click.argument("journey_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_appcontext
@domain_errors
def resume_command(journey_id, as_json):
    """Let a paused journey run again."""
    _lifecycle(service.resume, journey_id, as_json)


@journeys_group.command("sweep")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_appcontext
def sweep_command(as_json):
    """Run the sweeper once: recover stale sends and work off what is due.

    With Redis (CDP_REDIS_URL) the due work is queued for the workers; without it (the
    embedded mode, whose queue lives in the web process) it is done here, batch by batch.
    """
    swept = tasks.sweep()
    advanced = performed = 0
    if task_queue().embedded:
        for _ in range(MAX_SWEEP_ROUNDS):
            result = tasks.run_once()
            advanced, performed = advanced + result["advanced"], performed + result["performed"]
            if not any(result.values()):
                break
    payload = {**swept, "advanced": advanced, "performed": performed}
    where = "queued for the workers" if not task_queue().embedded else "run here"
    lines = [
        f"due instances: {swept.get('due', 0)} ({where}); advanced {advanced}, "
        f"deliveries performed {performed}; recovered: {swept['recovered'] or 'none'}"
    ]
    emit(as_json, payload, lines)


@journeys_group.command("seed-demo")
@click.option("--if-empty", is_flag=True, help="Do nothing when any journey exists.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_appcontext
@domain_errors
def seed_demo_command(if_empty, as_json):
    """Publish the demo journeys (refill reminders, welcome series, doctors' meeting)."""
    if if_empty and service.list_journeys():
        emit(as_json, {"journeys": [], "skipped": True}, ["Journeys exist already; nothing to do."])
        return
    try:
        result = demo.seed_journeys(SYSTEM)
    except InvalidDefinition as invalid:
        _refuse(invalid.problems, as_json)
    made = result["journeys"]
    lines = [f"Published {len(made)} demo journey(s)." if made else "The demo journeys exist."]
    lines += [f"  #{j['id']} {j['name']} (version {j['version']})" for j in made]
    lines.append("Using: " + ", ".join(f"{key} #{value}" for key, value in result["ids"].items()))
    emit(as_json, {**result, "skipped": False}, lines)
