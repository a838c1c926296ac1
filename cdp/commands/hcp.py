"""``cdp hcp``: doctors' engagement (the demo data for meetings, quizzes and points)."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext

from cdp.actors import SYSTEM
from cdp.commands.output import domain_errors, emit
from cdp.commands.seed import ensure_demo_users
from cdp.seed.hcp import seed_hcp, seeded


@click.group("hcp")
def hcp_group():
    """Doctors (HCP): meetings, quizzes, knowledge, academic points."""


@hcp_group.command("seed-demo")
@click.option("--seed", default=11, show_default=True, type=int, help="Same seed, same data.")
@click.option("--if-empty", is_flag=True, help="Do nothing when the demo meetings exist.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_appcontext
@domain_errors
def hcp_seed_demo(seed, if_empty, as_json):
    """Demo reps and manager, doctors' master data, meetings, quizzes, attendance and points."""
    if current_app.config.get("PRODUCTION"):
        raise click.UsageError("seed-demo adds fake people and known logins; not in production")
    if if_empty and seeded():
        emit(as_json, {"skipped": True}, ["The demo meetings exist already; nothing to do."])
        return
    ensure_demo_users(SYSTEM)  # the reps and manager, on a database seeded before they existed
    result = seed_hcp(SYSTEM, seed=seed)
    lines = [
        f"Doctors: {result['doctors']} ({result['verified']} verified); {result['meetings']} "
        f"meetings, {result['events']} events from the live-stream platform.",
        f"Academic points: {result['awarded']} awarded, {result['refused']} refused; "
        f"{result['redeemed']} redeemed.",
    ]
    emit(as_json, {**result, "skipped": False}, lines)
