"""Journey validation: every problem with its JSON Pointer; the API, the builder UI and publish share it.

``validate(definition)`` returns ``[{"path", "code", "message"}]`` (empty: valid). It runs the
JSON Schema (journeys/schema/journey.schema.json), then checks what a schema cannot: the step
graph (unknown and duplicate ids, unreachable steps, loops that would spin), splits, branch
conditions (segment rules), and what the definition refers to in the database: segments,
content (approved, unexpired, right kind, allowed for the audience), coupon campaigns and
points actions. ``pin_content`` stamps each send/webhook step with the content version the
validator checked: that is what a published version sends.
"""

from __future__ import annotations

import copy
from datetime import datetime
from urllib.parse import urlsplit

import sqlalchemy as sa

from cdp.content.guards import journey_content_problems
from cdp.content.library import local_date
from cdp.db import db, utcnow
from cdp.exceptions import ValidationFailed
from cdp.hcp.meetings import open_for_invitations
from cdp.loyalty.common import setting as loyalty_setting
from cdp.models.content import ContentItem, ContentVersion
from cdp.models.hcp import Meeting
from cdp.models.loyalty import CouponCampaign
from journeys.definition import WAIT_STEPS
from journeys.schema_errors import pointer, schema_errors
from journeys.settings import setting
from segments import definition as segment_definitions
from segments.membership import load_definition
from segments.models import Segment

# The content kind each send channel's adapter delivers.
ADAPTER_KINDS = {"wechat": "wechat_template", "miniprogram": "miniprogram_subscribe", "sms": "sms"}
LINK_KEYS = ("next", "then", "else", "timeout_next")
MAX_ID = 2**31 - 1  # integer primary keys: a larger id cannot exist (and must not reach SQL)
# Codes of the checks beyond the schema, with their messages (content problems add the
# send guards' reason codes, cdp.content.guards.REASONS).
CODES = {
    "not_object": "a journey definition must be a JSON object",
    "duplicate_step_id": "step id {id!r} is already used by step {first}",
    "unknown_step": "no step {id!r}",
    "unreachable_step": "step {id!r} cannot be reached from the start",
    "cycle_without_wait": "steps {ring} loop without a wait or wait_for_event: it would spin",
    "split_percent_sum": "the paths' percents add up to {total}, not 100",
    "split_holdouts": "a split has at most one holdout path",
    "no_entry_key": "match_entry_key needs a trigger with an entry_key",
    "bad_condition": "{message}",
    "unknown_segment": "segment {id} does not exist",
    "segment_archived": "segment {id} is archived",
    "unknown_content": "no content item {id}",
    "content_wrong_kind": "{channel} steps send {wanted} content; item {id} is {kind}",
    "content_not_approved": "content item {id} has no approved version that is still valid",
    "marketing_in_service_journey": "marketing content needs a marketing journey (category)",
    "webhook_url_not_allowed": "webhooks call https URLs, or http on JOURNEY_WEBHOOK_ALLOWED_HOSTS",
    "unknown_campaign": "no coupon campaign {id}",
    "campaign_ended": "coupon campaign {id} has ended",
    "campaign_audience_mismatch": "coupon campaign {id} is for {audience}, this journey for {kind}",
    "unknown_points_action": "no points are configured for {action!r} (LOYALTY_ACTION_POINTS)",
    "points_action_not_for_hcp": "doctors earn points for educational actions only, not {action!r}",
    "unknown_meeting": "no meeting {id}",
    "meeting_closed": "meeting {id}: {why}",
    "meeting_needs_hcp": "only doctors are invited to meetings: use an hcp audience",
    "quiet_hours_empty": "quiet hours start and end are equal",
    "bad_datetime": "must be an ISO 8601 date-time with a time zone",
}


class InvalidDefinition(ValidationFailed):
    """A definition that cannot be published; ``problems`` lists every one (path, code, message)."""

    def __init__(self, problems: list[dict]):
        first = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"{first['path'] or '/'}: {first['message']}{more}", "definition")
        self.problems = problems


def _get(model, row_id):
    return db.session.get(model, row_id) if 1 <= row_id <= MAX_ID else None


def problem(path: str, code: str, message: str | None = None, **values) -> dict:
    text = CODES[code].format(**values) if message is None else message
    return {"path": path, "code": code, "message": text}


def schema_problems(definition) -> list[dict]:
    """Problems the JSON Schema finds, one per (path, message), in document order."""
    if not isinstance(definition, dict):
        return [problem("", "not_object")]
    return [problem(path, code, message) for path, code, message in schema_errors(definition)]


# --- content ----------------------------------------------------------------------------------


def approved_version(item_id: int, at: datetime | None = None) -> ContentVersion | None:
    """The item's newest approved version that has not expired on ``at``'s local day."""
    query = sa.select(ContentVersion).where(
        ContentVersion.item_id == item_id,
        ContentVersion.status == "approved",
        ContentVersion.expires_on >= local_date(at or utcnow()),
    )
    return db.session.scalar(query.order_by(ContentVersion.number.desc()).limit(1))


def pin_content(definition: dict, at: datetime | None = None) -> dict:
    """A copy whose send and webhook steps carry ``content_version_id``: what publishing sends."""
    pinned = copy.deepcopy(definition)
    for step in pinned.get("steps") or []:
        if isinstance(step, dict) and step.get("type") in ("send", "webhook"):
            content_id = step.get("content_id")
            ok = type(content_id) is int and 1 <= content_id <= MAX_ID
            version = approved_version(content_id, at) if ok else None
            step.pop("content_version_id", None)
            if version is not None:
                step["content_version_id"] = version.id
    return pinned


# --- the checks a schema cannot make ----------------------------------------------------------


class _Checker:
    def __init__(self, definition: dict, at: datetime, broken: set[str]):
        self.definition = definition
        self.at = at
        self.broken = broken  # paths with schema problems: their references are not looked up
        self.problems: list[dict] = []
        audience = definition.get("audience")
        kind = audience.get("kind") if isinstance(audience, dict) else None
        self.kind = kind if kind in ("patient", "hcp") else None
        steps = definition.get("steps")
        steps = steps if isinstance(steps, list) else []
        self.steps = [(i, s) for i, s in enumerate(steps) if isinstance(s, dict)]
        self.steps_by_index = dict(self.steps)
        self.first: dict[str, int] = {}  # step id -> index of the step that has it

    def add(self, path: str, code: str, message: str | None = None, **values) -> None:
        self.problems.append(problem(path, code, message, **values))

    def sound(self, path: str) -> bool:
        return not any(p == path or p.startswith(path + "/") for p in self.broken)

    def run(self) -> list[dict]:
        edges = self.links(self.ids())
        self.reachable(edges)
        self.loops(edges)
        self.segments()
        self.settings()
        trigger = self.definition.get("trigger")
        keyed = isinstance(trigger, dict) and bool(trigger.get("entry_key"))
        for index, step in self.steps:
            path, kind = pointer("steps", index), step.get("type")
            if kind == "split":
                self.split(path, step.get("paths"))
            if kind == "wait_for_event" and step.get("match_entry_key") and not keyed:
                self.add(path + "/match_entry_key", "no_entry_key")
            if self.sound(path):
                self.references(path, kind, step)
        return self.problems

    def references(self, path: str, kind: str, step: dict) -> None:
        if kind == "branch":
            self.condition(path + "/condition", step["condition"])
        elif kind in ("send", "webhook"):
            self.content(path + "/content_id", step)
            if kind == "webhook":
                self.webhook_url(path + "/url", step["url"])
        elif kind == "issue_coupon":
            self.campaign(path + "/campaign_id", step["campaign_id"])
        elif kind == "award_points":
            self.points(path + "/action", step["action"])
        elif kind == "invite_to_meeting":
            self.meeting(path + "/meeting_id", step["meeting_id"])

    # The graph: ids, links, reachability, loops.

    def ids(self) -> dict[str, int]:
        for index, step in self.steps:
            step_id = step.get("id")
            if isinstance(step_id, str) and step_id in self.first:
                where = pointer("steps", index, "id")
                self.add(where, "duplicate_step_id", id=step_id, first=self.first[step_id])
            elif isinstance(step_id, str):
                self.first[step_id] = index
        return self.first

    def first_index(self, step: dict) -> int | None:
        step_id = step.get("id")
        return self.first.get(step_id) if isinstance(step_id, str) else None

    def links(self, first: dict[str, int]) -> dict[str, list[str]]:
        edges: dict[str, list[str]] = {step_id: [] for step_id in first}
        for index, step in self.steps:
            for rel, target in _links(step):
                if isinstance(target, str) and target not in first:
                    self.add(pointer("steps", index, *rel), "unknown_step", id=target)
                elif isinstance(target, str) and self.first_index(step) == index:
                    edges[step["id"]].append(target)
        return edges

    def reachable(self, edges: dict[str, list[str]]) -> None:
        start = self.definition.get("start")
        if not isinstance(start, str):
            return
        if start not in edges:
            self.add("/start", "unknown_step", id=start)
            return
        seen, todo = {start}, [start]
        while todo:
            for target in edges[todo.pop()]:
                if target not in seen:
                    seen.add(target)
                    todo.append(target)
        for step_id, index in self.first.items():
            if step_id not in seen:
                self.add(pointer("steps", index), "unreachable_step", id=step_id)

    def loops(self, edges: dict[str, list[str]]) -> None:
        # A loop with no wait in it would run forever without pausing: drop the waits, and any
        # cycle that remains is one.
        waits = {
            step_id
            for step_id, n in self.first.items()
            if self.steps_by_index[n].get("type") in WAIT_STEPS
        }
        quick = {a: [b for b in bs if b not in waits] for a, bs in edges.items() if a not in waits}
        for loop in _cycles(quick):
            ring = " → ".join([*loop, loop[0]])
            self.add(pointer("steps", self.first[loop[0]]), "cycle_without_wait", ring=ring)

    def split(self, path: str, paths) -> None:
        paths = list(enumerate(paths if isinstance(paths, list) else []))
        percents = [p.get("percent") for _, p in paths if isinstance(p, dict)]
        if percents and all(type(n) is int for n in percents) and sum(percents) != 100:
            self.add(path + "/paths", "split_percent_sum", total=sum(percents))
        holdouts = [j for j, p in paths if isinstance(p, dict) and p.get("holdout") is True]
        for j in holdouts[1:]:
            self.add(f"{path}/paths/{j}", "split_holdouts")

    # What the definition refers to.

    def segment(self, path: str, segment_id) -> None:
        if type(segment_id) is not int or not self.sound(path):
            return
        segment = _get(Segment, segment_id)
        if segment is None:
            self.add(path, "unknown_segment", id=segment_id)
        elif segment.status != "active":
            self.add(path, "segment_archived", id=segment_id)

    def segments(self) -> None:
        audience, trigger = self.definition.get("audience"), self.definition.get("trigger")
        if isinstance(audience, dict):
            self.segment("/audience/segment_id", audience.get("segment_id"))
        if isinstance(trigger, dict) and trigger.get("type") in ("segment_entry", "schedule"):
            self.segment("/trigger/segment_id", trigger.get("segment_id"))
        exits = self.definition.get("exit")
        for index, rule in enumerate(exits if isinstance(exits, list) else []):
            if isinstance(rule, dict):
                self.segment(pointer("exit", index, "segment_exit"), rule.get("segment_exit"))

    def condition(self, path: str, node: dict) -> None:
        """A branch condition is a segment rule node: the segment validator says what is wrong."""

        def load(segment_id: int) -> dict | None:
            return load_definition(segment_id) if 1 <= segment_id <= MAX_ID else None

        for found in segment_definitions.validate({"rule": node}, load):
            rel = found.path.removeprefix("/rule")
            missing = rel.endswith("/segment_id") and "does not exist" in found.message
            code = "unknown_segment" if missing else "bad_condition"
            self.add(path + rel, code, found.message)

    def content(self, path: str, step: dict) -> None:
        item = _get(ContentItem, step["content_id"])
        if item is None:
            return self.add(path, "unknown_content", id=step["content_id"])
        channel = step.get("channel", "webhook")
        wanted = ADAPTER_KINDS.get(channel, "webhook")
        if item.kind != wanted:
            values = {"channel": channel, "wanted": wanted, "id": item.id, "kind": item.kind}
            return self.add(path, "content_wrong_kind", **values)
        version = approved_version(item.id, self.at)
        if version is None:
            return self.add(path, "content_not_approved", id=item.id)
        for code, message in journey_content_problems(version, self.kind, channel, self.at):
            self.add(path, code, f"version {version.number}: {message}")
        # A service journey skips the global control group: marketing must not ride on one.
        if version.category == "marketing" and self.definition.get("category") == "service":
            self.add(path, "marketing_in_service_journey")

    def webhook_url(self, path: str, url: str) -> None:
        parts = urlsplit(url)
        allowed = set(setting("JOURNEY_WEBHOOK_ALLOWED_HOSTS") or ())
        if not parts.hostname or (parts.scheme != "https" and parts.hostname not in allowed):
            self.add(path, "webhook_url_not_allowed")

    def campaign(self, path: str, campaign_id: int) -> None:
        campaign = _get(CouponCampaign, campaign_id)
        if campaign is None:
            return self.add(path, "unknown_campaign", id=campaign_id)
        until = campaign.valid_until
        if campaign.status == "ended" or (until is not None and until <= self.at):
            self.add(path, "campaign_ended", id=campaign_id)
        if self.kind and campaign.audience != self.kind:
            values = {"id": campaign_id, "audience": campaign.audience, "kind": self.kind}
            self.add(path, "campaign_audience_mismatch", **values)

    def points(self, path: str, action: str) -> None:
        if action not in (loyalty_setting("LOYALTY_ACTION_POINTS") or {}):
            self.add(path, "unknown_points_action", action=action)
        elif self.kind == "hcp" and action not in loyalty_setting("LOYALTY_HCP_ACTIONS"):
            self.add(path, "points_action_not_for_hcp", action=action)

    def meeting(self, path: str, meeting_id: int) -> None:
        meeting = _get(Meeting, meeting_id)
        if meeting is None:
            return self.add(path, "unknown_meeting", id=meeting_id)
        why = open_for_invitations(meeting, self.at)
        if why:
            self.add(path, "meeting_closed", id=meeting_id, why=why)
        if self.kind != "hcp":
            self.add(path, "meeting_needs_hcp")

    def settings(self) -> None:
        """Values the schema allows that make no sense."""
        quiet = self.definition.get("quiet_hours")
        if isinstance(quiet, dict) and self.sound("/quiet_hours"):
            start, end = setting("JOURNEY_QUIET_HOURS")
            if quiet.get("start", start) == quiet.get("end", end):
                self.add("/quiet_hours", "quiet_hours_empty")
        trigger = self.definition.get("trigger")
        trigger = trigger if isinstance(trigger, dict) else {}
        at = trigger.get("at")
        if trigger.get("type") == "schedule" and isinstance(at, str) and self.sound("/trigger/at"):
            try:
                aware = datetime.fromisoformat(at).tzinfo is not None
            except ValueError:
                aware = False
            if not aware:
                self.add("/trigger/at", "bad_datetime")


def _links(step: dict):
    """(relative path, target) of every link a step has, whatever its type says."""
    for key in LINK_KEYS:
        if key in step:
            yield (key,), step[key]
    paths = step.get("paths")
    for index, path in enumerate(paths if isinstance(paths, list) else []):
        if isinstance(path, dict) and "next" in path:
            yield ("paths", index, "next"), path["next"]


def _cycles(edges: dict[str, list[str]]) -> list[list[str]]:
    """Strongly connected components that hold a cycle (Tarjan), members in definition order."""
    order = {node: n for n, node in enumerate(edges)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:  # at most 200 steps: the recursion stays shallow
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in edges[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = stack[stack.index(node) :]
            del stack[stack.index(node) :]
            if len(component) > 1 or node in edges[node]:
                found.append(sorted(component, key=order.__getitem__))

    for node in edges:
        if node not in index:
            visit(node)
    return found


def validate(definition, at: datetime | None = None) -> list[dict]:
    """Every problem of a journey definition as {"path", "code", "message"}; [] when valid."""
    problems = schema_problems(definition)
    if not isinstance(definition, dict):
        return problems
    broken = {p["path"] for p in problems}
    return problems + _Checker(definition, at or utcnow(), broken).run()


def check(definition, at: datetime | None = None) -> None:
    """:raise InvalidDefinition: with every problem, unless the definition is valid."""
    problems = validate(definition, at)
    if problems:
        raise InvalidDefinition(problems)
