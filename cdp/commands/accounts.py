"""``cdp users …`` and ``cdp tokens …``: manage accounts and API tokens."""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from cdp.actors import SYSTEM
from cdp.auth import accounts
from cdp.auth import tokens as api_tokens
from cdp.commands.output import domain_errors, emit
from cdp.exceptions import NotFound
from cdp.models.users import ROLES


@click.group("users", help="Manage user accounts.")
def users():
    pass


@users.command("create")
@click.option("--email", required=True)
@click.option("--role", required=True, type=click.Choice(ROLES))
@click.option("--password", help="At least 10 characters; generated and printed when omitted.")
@click.option("--name", default="")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_appcontext
@domain_errors
def create_user(email, role, password, name, as_json):
    """Create a user with a role."""
    user, password_used = accounts.create_user(SYSTEM, email, role, password, name)
    payload = {"id": user.id, "email": user.email, "role": user.role}
    if not password:
        payload["password"] = password_used
    lines = [f"Created user {user.id} <{user.email}> with role {user.role}."]
    if not password:
        lines.append(f"Password: {password_used}")
    emit(as_json, payload, lines)


@users.command("set-role")
@click.option("--email", required=True)
@click.option("--role", required=True, type=click.Choice(ROLES))
@with_appcontext
@domain_errors
def set_role(email, role):
    """Change a user's role (ends their sessions)."""
    user = accounts.find_user(email)
    if user is None:
        raise NotFound("no such user", "email")
    accounts.set_role(SYSTEM, user.id, role)
    click.echo(f"User {user.id} now has role {role}.")


@click.group("tokens", help="Manage REST API bearer tokens.")
def tokens():
    pass


@tokens.command("create")
@click.option("--email", required=True, help="The user the token acts as.")
@click.option("--name", default="cli")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_appcontext
@domain_errors
def create_token(email, name, as_json):
    """Create a bearer token for the REST API (printed once)."""
    user = accounts.find_user(email)
    if user is None:
        raise NotFound("no such user", "email")
    token, raw = api_tokens.create_token(SYSTEM, user, name)
    emit(as_json, {"id": token.id, "token": raw}, [raw])


@tokens.command("revoke")
@click.argument("token_id", type=int)
@with_appcontext
@domain_errors
def revoke_token(token_id):
    """Revoke a token by id."""
    api_tokens.revoke_token(SYSTEM, token_id)
    click.echo(f"Token {token_id} revoked.")
