"""The one table of who may do what; every check in the app goes through ``require``."""

from __future__ import annotations

from cdp.actors import Actor
from cdp.exceptions import PermissionDenied

# Permission names are "<area>:<verb>"; admin holds every permission. Admin-only ones include
# users:edit, profiles:pii, profiles:unmerge, consents:edit, privacy:view, privacy:export,
# privacy:erase, privacy:retention, privacy:keys and loyalty:partners (docs/security.md has
# the whole matrix).
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "marketer": frozenset(
        {
            "dashboard:view",
            "profiles:view",
            "segments:view",
            "segments:edit",
            "segments:export",
            "journeys:view",
            "journeys:edit",
            "journeys:publish",
            "content:view",
            "content:edit",
            "content:preview",
            "consents:view",
            "loyalty:view",
            "loyalty:edit",
            "loyalty:points",
            "models:view",
            "sources:view",
            "jobs:view",
            "hcp:view",
            "hcp:edit",
        }
    ),
    "reviewer": frozenset(
        {
            "dashboard:view",
            "content:view",
            "content:review",
            "content:preview",
            "journeys:view",
            "jobs:view",
        }
    ),
    "analyst": frozenset(
        {
            "dashboard:view",
            "profiles:view",
            "segments:view",
            "segments:edit",
            "segments:export",
            "models:view",
            "models:edit",
            "consents:view",
            "loyalty:view",
            "jobs:view",
            "hcp:view",
        }
    ),
    "partner": frozenset({"partner:api"}),
    # Field force: reps look after their own doctors and ask for invitations; managers approve
    # them, override tiers and approve academic items. Neither sees patients or content drafts.
    "rep": frozenset({"dashboard:view", "hcp:view", "hcp:edit"}),
    "manager": frozenset({"dashboard:view", "hcp:view", "hcp:edit", "hcp:approve"}),
    "admin": frozenset(),  # everything, see allowed()
}


def allowed(role: str | None, permission: str) -> bool:
    if role == "admin":
        return permission != "partner:api"
    return permission in ROLE_PERMISSIONS.get(role or "", frozenset())


def require(actor: Actor, permission: str) -> None:
    """Raise PermissionDenied unless the actor's role grants ``permission``."""
    if not allowed(actor.role, permission):
        raise PermissionDenied(f"role '{actor.role}' may not {permission}")
