"""``cdp content …``: list the content library and expire content past its date."""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from cdp.actors import Actor
from cdp.content.library import latest_versions, list_items
from cdp.content.operations import expire_due
from cdp.models.content import VERSION_STATES


@click.group("content", help="The content library.")
def content_group():
    pass


@content_group.command("list")
@click.option("--status", type=click.Choice(VERSION_STATES))
@with_appcontext
def list_command(status):
    """Items with their latest version's number, status and expiry date."""
    items = list_items(status=status, limit=1000)
    latest = latest_versions([i.id for i in items])
    for item in items:
        v = latest.get(item.id)
        state = f"v{v.number} {v.status:<9} expires {v.expires_on or '-'}" if v else "-"
        click.echo(f"{item.id:>5}  {item.kind:<22} {state}  {item.name}")


@content_group.command("expire")
@with_appcontext
def expire_command():
    """Mark approved versions past their expiry date as expired (hourly in the worker)."""
    count = expire_due(Actor(kind="system", role="admin", request_id="cli:content"))
    click.echo(f"{count} version(s) expired.")
