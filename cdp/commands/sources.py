"""``cdp sources …``: create and list data sources, set their tracking plans."""

from __future__ import annotations

import click
import orjson
from flask import current_app
from flask.cli import with_appcontext

from cdp.actors import SYSTEM
from cdp.commands.output import domain_errors, emit
from cdp.ingest.plans import set_tracking_plan
from cdp.sources import create_source, endpoint_urls, get_source, list_sources


def _parse_options(pairs: tuple[str, ...]) -> dict:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected key=value, got '{pair}'", param_hint="--option")
        options[key.strip()] = value
    return options


@click.group("sources", help="Manage data sources.")
def sources_group():
    pass


@sources_group.command("create")
@click.option("--name", required=True)
@click.option("--kind", required=True, help="Source kind, e.g. http (Segment-compatible API).")
@click.option("--option", "options", multiple=True, help="key=value, repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_appcontext
@domain_errors
def create(name, kind, options, as_json):
    """Create a source; print its id, write key (if any) and endpoint URLs."""
    source, write_key = create_source(SYSTEM, name, kind, _parse_options(options))
    urls = endpoint_urls(source, current_app.config["PUBLIC_URL"])
    lines = [f"Created source {source.id} ({source.kind}) '{source.name}'."]
    if write_key:
        lines.append(f"Write key (shown once): {write_key}")
    lines += [f"  {label}: {url}" for label, url in urls.items()]
    emit(
        as_json,
        {"id": source.id, "kind": source.kind, "write_key": write_key, "urls": urls},
        lines,
    )


@sources_group.command("list")
@with_appcontext
def list_command():
    """List sources."""
    for source in list_sources():
        state = "enabled" if source.enabled else "disabled"
        click.echo(f"{source.id}  {source.kind:<12} {state:<8} {source.name}")


@sources_group.command("plan")
@click.argument("source_id")
@click.option("--file", "path", type=click.File("rb"), help="The plan as JSON ('-': stdin).")
@click.option("--clear", is_flag=True, help="Remove the plan: every event is accepted.")
@with_appcontext
@domain_errors
def plan_command(source_id, path, clear):
    """Show, set (--file) or remove (--clear) a source's tracking plan."""
    if path is not None and clear:
        raise click.UsageError("give --file or --clear, not both")
    if path is not None:
        try:
            plan = orjson.loads(path.read())
        except orjson.JSONDecodeError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--file") from None
        source = set_tracking_plan(SYSTEM, source_id, plan)
    elif clear:
        source = set_tracking_plan(SYSTEM, source_id, None)
    else:
        source = get_source(source_id)
    click.echo(orjson.dumps(source.tracking_plan, option=orjson.OPT_INDENT_2).decode())
