"""``cdp audit verify``: check the audit log's hash chain."""

import click
from flask.cli import with_appcontext

from cdp.audit import verify_chain


@click.group("audit", help="Audit log tools.")
def audit_group():
    pass


@audit_group.command("verify")
@with_appcontext
def verify():
    """Verify the hash chain; exit 1 and name the first bad row if it was tampered with."""
    bad = verify_chain()
    if bad is None:
        click.echo("Audit log intact.")
        return
    click.echo(f"Audit log broken at row {bad}: it was edited or a row before it removed.")
    raise SystemExit(1)
