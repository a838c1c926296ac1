"""``cdp partners …`` and ``cdp loyalty …``: partner pharmacies, keys, stores, products, jobs."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import click
import orjson
import sqlalchemy as sa
from flask.cli import with_appcontext

from cdp.actors import SYSTEM
from cdp.commands.output import domain_errors, emit
from cdp.db import db
from cdp.exceptions import NotFound
from cdp.loyalty import ledger, partners, products, syncs
from cdp.loyalty.demo import seed_loyalty
from cdp.loyalty.tasks import expire_due
from cdp.models.loyalty import Partner


def _partner(ref: str) -> Partner:
    """A partner by id or code."""
    query = sa.select(Partner).where(
        Partner.id == int(ref) if ref.isdigit() else Partner.code == ref
    )
    partner = db.session.scalar(query)
    if partner is None:
        raise NotFound(f"no partner '{ref}'", "partner")
    return partner


@click.group("partners", help="Manage partner pharmacies, their stores and API keys.")
def partners_group():
    pass


@partners_group.command("create")
@click.option("--name", required=True)
@click.option("--code", help="Namespace of the members' card numbers (default: generated).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_appcontext
@domain_errors
def create(name, code, as_json):
    """Create a partner; print its id and API key (shown once)."""
    partner, key = partners.create_partner(SYSTEM, name, code)
    emit(
        as_json,
        {"id": partner.id, "code": partner.code, "api_key": key},
        [f"Created partner {partner.id} '{partner.name}' (code {partner.code}).",
         f"API key (shown once): {key}"],
    )  # fmt: skip


@partners_group.command("rotate-key")
@click.option("--partner", "ref", required=True, help="Partner id or code.")
@click.option("--grace-minutes", default=0, show_default=True, help="Old keys work this long.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_appcontext
@domain_errors
def rotate(ref, grace_minutes, as_json):
    """Issue a new API key; the old ones stop working (after the grace period)."""
    partner, key = partners.rotate_key(SYSTEM, _partner(ref).id, grace_minutes)
    emit(as_json, {"id": partner.id, "api_key": key}, [f"New API key (shown once): {key}"])


@partners_group.command("add-store")
@click.option("--partner", "ref", required=True, help="Partner id or code.")
@click.option("--code", required=True)
@click.option("--name", required=True)
@click.option("--city", default="")
@with_appcontext
@domain_errors
def add_store(ref, code, name, city):
    """Add a store to a partner."""
    store = partners.add_store(SYSTEM, _partner(ref).id, code, name, city)
    click.echo(f"Added store {store.code} '{store.name}'.")


@partners_group.command("list")
@with_appcontext
def list_command():
    """List partners."""
    for p in partners.list_partners():
        click.echo(f"{p.id:>4}  {p.code:<16} {p.status:<10} {p.name}")


@partners_group.command("sync")
@click.option("--partner", "ref", required=True, help="Partner id or code.")
@click.option("--file", "path", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_appcontext
@domain_errors
def sync(ref, path, as_json):
    """Upsert members from a JSON array or a CSV file with the API's field names."""
    body = Path(path).read_bytes()
    if path.lower().endswith(".csv"):
        rows = list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"), newline="")))
        rows = [{k: v for k, v in r.items() if k and v not in (None, "")} for r in rows]
        fmt = "csv"
    else:
        rows, fmt = orjson.loads(body), "json"
    result = syncs.start_sync(SYSTEM, _partner(ref).id, rows, fmt)
    payload = {
        "sync_id": result.id,
        "status": result.status,
        **{k: getattr(result, k) for k in ("total", "created", "updated", "unchanged", "rejected")},
    }
    emit(as_json, payload, [orjson.dumps(payload).decode()])


@click.group("loyalty", help="Loyalty: product catalogue, demo data, expiry job, reconciliation.")
def loyalty_group():
    pass


@loyalty_group.command("import-demo-products")
@with_appcontext
@domain_errors
def import_demo_products():
    """Load the demo drugs (with their Rx/OTC class) into the product catalogue."""
    click.echo(f"{products.import_demo_products(SYSTEM)} products in the demo set.")


@loyalty_group.command("add-product")
@click.option("--code", required=True)
@click.option("--name", required=True)
@click.option("--class", "product_class", required=True,
              type=click.Choice(["rx", "otc_a", "otc_b", "non_drug"]))  # fmt: skip
@click.option("--approval-number", default=None, help="批准文号")
@with_appcontext
@domain_errors
def add_product(code, name, product_class, approval_number):
    """Add a product to the catalogue or change its class."""
    products.save_product(SYSTEM, code, name, product_class, approval_number)
    click.echo(f"Saved product {code} ({product_class}).")


@loyalty_group.command("expire")
@with_appcontext
def expire():
    """Expire due coupons and points now (the worker also does it every 10 minutes)."""
    click.echo(orjson.dumps(expire_due()).decode())


@loyalty_group.command("reconcile")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_appcontext
def reconcile(as_json):
    """Check every points balance against its ledger and lots; exit 1 on a mismatch."""
    report = ledger.reconciliation()
    report["checked_at"] = report["checked_at"].isoformat()
    lines = [
        f"{report['accounts']} accounts, {report['outstanding']} points outstanding.",
        "OK: balances match the ledger." if report["ok"] else
        f"MISMATCH in {len(report['mismatches'])} account(s): {report['mismatches'][:5]}",
    ]  # fmt: skip
    emit(as_json, report, lines)
    if not report["ok"]:
        raise SystemExit(1)


@loyalty_group.command("seed-demo")
@click.option("--members", default=300, show_default=True, help="Members who get coupons.")
@click.option("--if-empty", is_flag=True, help="Do nothing when partners exist already.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_appcontext
@domain_errors
def seed_demo(members, if_empty, as_json):
    """Make the demo pharmacy chains partners, with campaigns, coupons, redemptions, points."""

    if if_empty and partners.list_partners():
        emit(as_json, {"partners": {}}, ["Partners exist already; nothing to do."])
        return
    keys = seed_loyalty(SYSTEM, members=members)
    emit(
        as_json,
        {"partners": keys},
        ["Demo partners and their API keys (shown once):"]
        + [f"  {code}: {key}" for code, key in keys.items()],
    )
