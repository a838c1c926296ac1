"""``cdp connectors …``: run a pull now, show a source's health."""

from __future__ import annotations

import click
import orjson
from flask.cli import with_appcontext

from cdp.actors import SYSTEM
from cdp.commands.output import domain_errors
from cdp.db import db
from cdp.exceptions import NotFound
from cdp.models import Source
from cdp.sources import get_kind
from connectors import ecommerce_pull, wechat_pull
from connectors.health import source_health


@click.group("connectors", help="Channel connectors: pulls and health.")
def connectors_group():
    pass


@connectors_group.command("sync")
@click.argument("source_id")
@click.option("--wait", is_flag=True, help="Run in this process instead of queueing it.")
@with_appcontext
@domain_errors
def sync(source_id, wait):
    """Pull now: WeChat followers (wechat) or orders (ecommerce)."""

    source = db.session.get(Source, source_id)
    if source is None:
        raise NotFound("no such source", "source_id")
    runs = {"wechat": wechat_pull.sync_followers, "ecommerce": ecommerce_pull.pull_orders}
    if source.kind not in runs:
        raise click.UsageError(f"sources of kind {source.kind} are pushed to, not pulled")
    job = get_kind(source.kind).start_pull(SYSTEM, source)  # as "Sync now" does: audited
    run = runs[source.kind]
    if wait:
        click.echo(orjson.dumps(run(source_id, job.id), default=str).decode())
    else:
        click.echo(f"queued job {job.id}")


@connectors_group.command("health")
@click.argument("source_id")
@with_appcontext
@domain_errors
def health(source_id):
    """Print a source's health (activity, errors with masked payloads, cursors) as JSON."""

    click.echo(orjson.dumps(source_health(source_id), default=str).decode())
