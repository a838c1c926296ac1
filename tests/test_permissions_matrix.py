"""Every role × every /api/v1 endpoint: 403 exactly when docs/security.md says so.

The permission of each endpoint is read from its ``api_requires`` decorator; the matrix in
docs/security.md must list every endpoint with that permission and the roles it allows
(``cdp.auth.permissions``). Then each role calls each endpoint for real: refused roles get
403, allowed roles get through (a 2xx where the test knows how to make a valid request).
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
import sqlalchemy as sa

from cdp.actors import SYSTEM, Actor
from cdp.auth.permissions import allowed
from cdp.content import operations as ops
from cdp.db import db
from cdp.ingest.pipeline import ingest
from cdp.models import Merge, Violation
from cdp.models.users import ROLES
from cdp.privacy import erasure, retention
from cdp.sources import create_source
from journeys import service as journey_service
from tests.conftest import make_user
from tests.test_api import bearer, issue_token
from tests.test_content import EXPIRES

DOC = Path(__file__).resolve().parent.parent / "docs" / "security.md"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
ANY_TOKEN = "(any token)"
OWN_AUTH = "(own authentication)"  # e.g. the partner API's keys: user tokens are refused
_ROW = re.compile(
    r"^\|\s*(GET|POST|PUT|PATCH|DELETE)\s*\|\s*`([^`]+)`\s*\|\s*`?([^|`]+?)`?\s*\|(.*)\|\s*$"
)


def _permission_of(fn, seen=None) -> str | None:
    """The permission an ``api_requires`` wrapper checks, found through wrappers' closures."""
    seen = seen or set()
    if fn is None or id(fn) in seen:
        return None
    seen.add(id(fn))
    code = getattr(fn, "__code__", None)
    if code is not None and code.co_filename.endswith("api/auth.py"):  # api_requires' wrapper
        cells = dict(zip(code.co_freevars, fn.__closure__ or (), strict=False))
        if "permission" in cells:
            return cells["permission"].cell_contents
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            inner = cell.cell_contents
        except ValueError:
            continue
        if callable(inner):
            found = _permission_of(inner, seen)
            if found:
                return found
    return _permission_of(getattr(fn, "__wrapped__", None), seen)


def api_endpoints(app) -> dict[tuple[str, str], str]:
    """(method, rule) -> permission for every /api/v1 endpoint of the app."""
    from web.api.auth import authenticate_request

    found = {}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/"):
            continue
        view = app.view_functions[rule.endpoint]
        blueprint = rule.endpoint.rpartition(".")[0]
        bearer_auth = authenticate_request in app.before_request_funcs.get(blueprint, [])
        for method in sorted(rule.methods & set(METHODS)):
            handler = getattr(getattr(view, "view_class", None), method.lower(), view)
            permission = _permission_of(handler) or ANY_TOKEN
            found[(method, rule.rule)] = permission if bearer_auth else OWN_AUTH
    return found


def documented() -> dict[tuple[str, str], tuple[str, list[str]]]:
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        match = _ROW.match(line)
        if match:
            method, path, permission, cells = match.groups()
            marks = [c.strip() for c in cells.split("|")]
            rows[(method, path)] = (permission.strip(), marks)
    return rows


def doc_row(method: str, rule: str, permission: str) -> str:
    """The matrix row of an endpoint, as docs/security.md writes it."""
    marks = " | ".join("✓" if expected(role, permission) else "—" for role in ROLES)
    shown = permission if permission.startswith("(") else f"`{permission}`"
    return f"| {method} | `{rule}` | {shown} | {marks} |"


def expected(role: str, permission: str) -> bool:
    if permission == OWN_AUTH:
        return False
    return permission == ANY_TOKEN or allowed(role, permission)


def test_security_doc_lists_every_endpoint_with_its_permission_and_roles(app):
    code, doc = api_endpoints(app), documented()
    missing = sorted(set(code) - set(doc))
    stale = sorted(set(doc) - set(code))
    assert not missing, "add these rows to the matrix in docs/security.md:\n" + "\n".join(
        doc_row(method, rule, code[(method, rule)]) for method, rule in missing
    )
    assert not stale, f"docs/security.md lists endpoints that do not exist: {stale}"
    wrong = []
    for key, permission in code.items():
        doc_permission, marks = doc[key]
        if doc_permission != permission:
            wrong.append(f"{key}: code needs {permission}, doc says {doc_permission}")
        want = ["✓" if expected(role, permission) else "—" for role in ROLES]
        if marks != want:
            wrong.append(f"{key}: roles {dict(zip(ROLES, marks, strict=False))}, expected {want}")
    assert not wrong, "\n".join(wrong)


class World:
    """Fresh data for each call, so no request depends on another's side effects."""

    counter = itertools.count(1)

    def __init__(self, app):
        self.app = app
        with app.app_context():
            self.writer = make_user(app, "marketer", "writer@test.cn")
            self.source_id = create_source(SYSTEM, "s", "http")[0].id

    def n(self) -> int:
        return next(self.counter)

    def profile(self) -> int:
        from cdp.sources import get_source

        n = self.n()
        with self.app.app_context():
            result = ingest(get_source(self.source_id), [{"type": "identify", "userId": f"u{n}"}])
            return result.profile_ids[0]

    def merged(self) -> int:
        from cdp.sources import get_source

        n = self.n()
        with self.app.app_context():
            src = get_source(self.source_id)
            ingest(src, [{"type": "identify", "anonymousId": f"a{n}"}])
            ingest(src, [{"type": "identify", "userId": f"m{n}"}])
            ingest(src, [{"type": "identify", "userId": f"m{n}", "anonymousId": f"a{n}"}])
            return db.session.scalar(sa.select(Merge.survivor_id).order_by(Merge.id.desc()))

    def violation(self) -> int:
        from cdp.sources import get_source

        with self.app.app_context():
            ingest(get_source(self.source_id), [{"type": "track", "userId": "x"}])
            return db.session.scalar(sa.select(Violation.id).order_by(Violation.id.desc()))

    def content(self, status: str = "draft") -> int:
        writer = Actor(kind="user", user_id=self.writer, role="marketer")
        fields = {
            "body": {"text": "【康护】{{ context.drug }}快用完了。"},
            "expires_on": EXPIRES,
        }
        with self.app.app_context():
            version = ops.create_item(writer, f"c{self.n()}", "sms", **fields)
            if status in ("submitted", "approved"):
                ops.submit(writer, version.id)
            if status == "approved":
                reviewer_id = make_user(self.app, "reviewer", f"rev{self.n()}@test.cn")
                reviewer = Actor(kind="user", user_id=reviewer_id, role="reviewer")
                ops.approve(reviewer, version.id, approval_code="MLR-1")
            return version.item_id

    def journey(self, status: str = "draft") -> int:
        writer = Actor(kind="user", user_id=self.writer, role="marketer")
        definition = {
            "audience": {"kind": "patient"},
            "trigger": {"type": "event", "event": "signup"},
            "start": "end",
            "steps": [{"id": "end", "type": "exit"}],
        }
        with self.app.app_context():
            journey = journey_service.create_journey(writer, f"j{self.n()}", definition)
            if status in ("published", "paused"):
                journey_service.publish(writer, journey.id)
            if status == "paused":
                journey_service.pause(writer, journey.id)
            return journey.id

    def privacy_request(self) -> int:
        with self.app.app_context():
            return erasure.request_erasure(SYSTEM, self.profile()).id

    def retention_rule(self) -> str:
        name = f"event_{self.n()}"
        with self.app.app_context():
            retention.set_rule(SYSTEM, name, 30)
        return name


# (method, rule) -> fn(world) -> (path, json body): requests that must succeed when allowed.
VALID = {
    ("GET", "/api/v1/me"): lambda w: ("/api/v1/me", None),
    ("GET", "/api/v1/users"): lambda w: ("/api/v1/users", None),
    ("POST", "/api/v1/users"): lambda w: (
        "/api/v1/users",
        {"email": f"new{w.n()}@test.cn", "role": "analyst"},
    ),
    ("GET", "/api/v1/sources"): lambda w: ("/api/v1/sources", None),
    ("POST", "/api/v1/sources"): lambda w: ("/api/v1/sources", {"name": "n", "kind": "http"}),
    ("POST", "/api/v1/sources/<source_id>/rotate-key"): lambda w: (
        f"/api/v1/sources/{w.source_id}/rotate-key",
        None,
    ),
    ("GET", "/api/v1/jobs"): lambda w: ("/api/v1/jobs", None),
    ("GET", "/api/v1/profiles"): lambda w: ("/api/v1/profiles", None),
    ("GET", "/api/v1/profiles/<int:profile_id>"): lambda w: (
        f"/api/v1/profiles/{w.profile()}",
        None,
    ),
    ("GET", "/api/v1/profiles/<int:profile_id>/events"): lambda w: (
        f"/api/v1/profiles/{w.profile()}/events",
        None,
    ),
    ("POST", "/api/v1/profiles/<int:profile_id>/unmerge"): lambda w: (
        f"/api/v1/profiles/{w.merged()}/unmerge",
        {},
    ),
    ("GET", "/api/v1/profiles/<int:profile_id>/consents"): lambda w: (
        f"/api/v1/profiles/{w.profile()}/consents",
        None,
    ),
    ("POST", "/api/v1/profiles/<int:profile_id>/consents"): lambda w: (
        f"/api/v1/profiles/{w.profile()}/consents",
        {"purpose": "marketing", "status": "granted"},
    ),
    ("GET", "/api/v1/merges"): lambda w: ("/api/v1/merges", None),
    ("GET", "/api/v1/violations"): lambda w: ("/api/v1/violations", None),
    ("GET", "/api/v1/violations/<int:violation_id>"): lambda w: (
        f"/api/v1/violations/{w.violation()}",
        None,
    ),
    ("GET", "/api/v1/content"): lambda w: ("/api/v1/content", None),
    ("POST", "/api/v1/content"): lambda w: ("/api/v1/content", {"name": "n", "kind": "sms"}),
    ("GET", "/api/v1/content/review-queue"): lambda w: ("/api/v1/content/review-queue", None),
    ("GET", "/api/v1/content/<int:content_id>"): lambda w: (f"/api/v1/content/{w.content()}", None),
    ("POST", "/api/v1/content/<int:content_id>/versions"): lambda w: (
        f"/api/v1/content/{w.content('approved')}/versions",
        {},
    ),
    ("GET", "/api/v1/content/<int:content_id>/versions/<int:number>"): lambda w: (
        f"/api/v1/content/{w.content()}/versions/1",
        None,
    ),
    ("PATCH", "/api/v1/content/<int:content_id>/versions/<int:number>"): lambda w: (
        f"/api/v1/content/{w.content()}/versions/1",
        {"therapeutic_area": "x"},
    ),
    ("POST", "/api/v1/content/<int:content_id>/versions/<int:number>/submit"): lambda w: (
        f"/api/v1/content/{w.content()}/versions/1/submit",
        {},
    ),
    ("POST", "/api/v1/content/<int:content_id>/versions/<int:number>/approve"): lambda w: (
        f"/api/v1/content/{w.content('submitted')}/versions/1/approve",
        {"approval_code": "M"},
    ),
    ("POST", "/api/v1/content/<int:content_id>/versions/<int:number>/reject"): lambda w: (
        f"/api/v1/content/{w.content('submitted')}/versions/1/reject",
        {"comment": "no"},
    ),
    ("POST", "/api/v1/content/<int:content_id>/versions/<int:number>/withdraw"): lambda w: (
        f"/api/v1/content/{w.content('approved')}/versions/1/withdraw",
        {},
    ),
    ("POST", "/api/v1/content/<int:content_id>/preview"): lambda w: (
        f"/api/v1/content/{w.content()}/preview",
        {"profile_id": w.profile()},
    ),
    ("GET", "/api/v1/journeys"): lambda w: ("/api/v1/journeys", None),
    ("POST", "/api/v1/journeys"): lambda w: ("/api/v1/journeys", {"name": "n", "definition": {}}),
    ("POST", "/api/v1/journeys/validate"): lambda w: ("/api/v1/journeys/validate", {}),
    ("GET", "/api/v1/journeys/<int:journey_id>"): lambda w: (
        f"/api/v1/journeys/{w.journey()}",
        None,
    ),
    ("PATCH", "/api/v1/journeys/<int:journey_id>"): lambda w: (
        f"/api/v1/journeys/{w.journey()}",
        {"name": "renamed"},
    ),
    ("POST", "/api/v1/journeys/<int:journey_id>/publish"): lambda w: (
        f"/api/v1/journeys/{w.journey()}/publish",
        {},
    ),
    ("POST", "/api/v1/journeys/<int:journey_id>/pause"): lambda w: (
        f"/api/v1/journeys/{w.journey('published')}/pause",
        None,
    ),
    ("POST", "/api/v1/journeys/<int:journey_id>/resume"): lambda w: (
        f"/api/v1/journeys/{w.journey('paused')}/resume",
        None,
    ),
    ("POST", "/api/v1/journeys/<int:journey_id>/archive"): lambda w: (
        f"/api/v1/journeys/{w.journey()}/archive",
        None,
    ),
    ("GET", "/api/v1/journeys/<int:journey_id>/versions"): lambda w: (
        f"/api/v1/journeys/{w.journey('published')}/versions",
        None,
    ),
    ("GET", "/api/v1/journeys/<int:journey_id>/versions/<int:number>"): lambda w: (
        f"/api/v1/journeys/{w.journey('published')}/versions/1",
        None,
    ),
    ("GET", "/api/v1/journeys/<int:journey_id>/stats"): lambda w: (
        f"/api/v1/journeys/{w.journey()}/stats",
        None,
    ),
    ("POST", "/api/v1/journeys/<int:journey_id>/test-mode"): lambda w: (
        f"/api/v1/journeys/{w.journey()}/test-mode",
        {"enabled": False},
    ),
    ("POST", "/api/v1/journeys/<int:journey_id>/dry-run"): lambda w: (
        f"/api/v1/journeys/{w.journey()}/dry-run",
        {},
    ),
    ("GET", "/api/v1/deliveries"): lambda w: ("/api/v1/deliveries", None),
    ("POST", "/api/v1/privacy/exports"): lambda w: (
        "/api/v1/privacy/exports",
        {"profile_id": w.profile()},
    ),
    ("POST", "/api/v1/privacy/erasures"): lambda w: (
        "/api/v1/privacy/erasures",
        {"profile_id": w.profile(), "confirm": True},
    ),
    ("GET", "/api/v1/privacy/requests"): lambda w: ("/api/v1/privacy/requests", None),
    ("GET", "/api/v1/privacy/requests/<int:request_id>"): lambda w: (
        f"/api/v1/privacy/requests/{w.privacy_request()}",
        None,
    ),
    ("GET", "/api/v1/privacy/retention"): lambda w: ("/api/v1/privacy/retention", None),
    ("PUT", "/api/v1/privacy/retention/<event_name>"): lambda w: (
        "/api/v1/privacy/retention/page_view",
        {"days": 30},
    ),
    ("DELETE", "/api/v1/privacy/retention/<event_name>"): lambda w: (
        f"/api/v1/privacy/retention/{w.retention_rule()}",
        None,
    ),
}


def _placeholder_path(rule: str) -> str:
    return re.sub(r"<(?:\w+:)?\w+>", "1", rule)


@pytest.mark.parametrize("role", ROLES)
def test_each_role_gets_403_exactly_where_the_matrix_says(app, client, role):
    world = World(app)
    headers = bearer(issue_token(app, make_user(app, role, f"{role}@test.cn")))
    problems = []
    for (method, rule), permission in sorted(api_endpoints(app).items()):
        builder = VALID.get((method, rule))
        path, body = builder(world) if builder else (_placeholder_path(rule), {})
        response = client.open(path, method=method, json=body, headers=headers)
        status = response.status_code
        if not expected(role, permission):
            refused = (401, 403) if permission == OWN_AUTH else (403,)
            if status not in refused:
                problems.append(f"{role} {method} {rule}: {status}, expected {refused}")
        elif status in (401, 403) or (builder and not 200 <= status < 300):
            detail = response.get_json(silent=True) or {}
            problems.append(f"{role} {method} {rule}: {status} {detail.get('message', '')}")
    assert not problems, "\n".join(problems)
