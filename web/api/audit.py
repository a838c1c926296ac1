"""/api/v1/audit: the audit log filtered and keyset-paged, and its audited CSV export.

The Audit page (web/ui/areas.py) uses the same filters, query and export, so the API and
the page always agree on what a filter means.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import orjson
import sqlalchemy as sa
from flask import Response, current_app, stream_with_context
from flask.views import MethodView
from marshmallow import (
    EXCLUDE,
    Schema,
    ValidationError,
    fields,
    pre_load,
    validate,
    validates_schema,
)

from cdp import audit
from cdp.actors import Actor
from cdp.auth.permissions import require
from cdp.db import db, transaction
from cdp.models import AuditEntry, User
from web.api.auth import api_blueprint, api_requires
from web.api.schemas import CursorPageArgsSchema, PageSchema, id_cursor
from web.session_auth import current_actor

bp = api_blueprint("audit", __name__, "The audit log: hash-chained, append-only, filterable")

EXPORT_CHUNK = 1000
EXPORT_FIELDS = (
    "id",
    "at",
    "actor_type",
    "actor_id",
    "action",
    "target_type",
    "target_id",
    "outcome",
    "ip",
    "request_id",
    "details",
    "row_hash",
)
# A cell starting with one of these is a formula to spreadsheet programs (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class AuditFilters:
    """What the log is narrowed to; every field is optional and they combine with AND."""

    actor: str | None = None  # a user id or e-mail, `partner:<id>`, or a kind ("system")
    action: str | None = None  # a prefix: "content." matches content.approve, content.reject
    target_type: str | None = None
    target_id: str | None = None
    outcome: str | None = None
    since: date | None = None  # days in the platform time zone, both ends included
    until: date | None = None

    def given(self) -> dict:
        """The filters that are set, as strings (for links and the export's audit row)."""
        return {k: str(v) for k, v in asdict(self).items() if v not in (None, "")}


def filters_of(args: dict) -> AuditFilters:
    return AuditFilters(**{k: args.get(k) for k in AuditFilters.__dataclass_fields__})


def _zone() -> ZoneInfo:
    return ZoneInfo(current_app.config.get("TIMEZONE") or "Asia/Shanghai")


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=_zone()).astimezone(UTC)


def _user_id_of(email: str) -> str | None:
    user_id = db.session.scalar(
        sa.select(User.id).where(sa.func.lower(User.email) == email.lower())
    )
    return None if user_id is None else str(user_id)


def _actor_condition(actor: str):
    if "@" in actor:  # audit rows name users by id; look the e-mail up
        user_id = _user_id_of(actor)
        return AuditEntry.actor_id == user_id if user_id else sa.false()
    return sa.or_(AuditEntry.actor_id == actor, AuditEntry.actor_type == actor)


def _conditions(filters: AuditFilters) -> list:
    found = []
    if filters.actor:
        found.append(_actor_condition(filters.actor))
    if filters.action:
        found.append(AuditEntry.action.startswith(filters.action, autoescape=True))
    if filters.target_type:
        found.append(AuditEntry.object_type == filters.target_type)
    if filters.target_id:
        found.append(AuditEntry.object_id == filters.target_id)
    if filters.outcome:
        found.append(AuditEntry.outcome == filters.outcome)
    if filters.since:
        found.append(AuditEntry.at >= _day_start(filters.since))
    if filters.until:
        found.append(AuditEntry.at < _day_start(filters.until + timedelta(days=1)))
    return found


def search(
    filters: AuditFilters, before_id: int | None = None, limit: int = 50
) -> list[AuditEntry]:
    """Entries matching ``filters``, newest first, older than ``before_id`` (keyset paging)."""
    query = sa.select(AuditEntry).where(*_conditions(filters))
    if before_id:
        query = query.where(AuditEntry.id < before_id)
    return list(db.session.scalars(query.order_by(AuditEntry.id.desc()).limit(limit)))


def user_emails(entries: list[AuditEntry]) -> dict[str, str]:
    """actor_id -> e-mail of the platform users among ``entries`` (to show who acted)."""
    ids = {int(e.actor_id) for e in entries if e.actor_id and e.actor_id.isdigit()}
    if not ids:
        return {}
    rows = db.session.execute(sa.select(User.id, User.email).where(User.id.in_(ids)))
    return {str(user_id): email for user_id, email in rows}


def _cell(value) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _row(entry: AuditEntry) -> list[str]:
    details = orjson.dumps(entry.details or {}, option=orjson.OPT_SORT_KEYS).decode()
    values = [
        entry.id,
        entry.at.isoformat(),
        entry.actor_type,
        entry.actor_id,
        entry.action,
        entry.object_type,
        entry.object_id,
        entry.outcome,
        entry.ip,
        entry.request_id,
        details,
        entry.row_hash,
    ]
    return [_cell(v) for v in values]


def export_rows(actor: Actor, filters: AuditFilters) -> Iterator[list[str]]:
    """CSV rows of the filtered log, oldest first. Viewing is not audited; exporting is.

    The export covers the log as it was when asked (its own audit row is not in it).
    """
    require(actor, "audit:view")
    conditions = _conditions(filters)
    upto = db.session.scalar(sa.select(sa.func.max(AuditEntry.id))) or 0
    total = db.session.scalar(
        sa.select(sa.func.count()).select_from(AuditEntry).where(*conditions, AuditEntry.id <= upto)
    )
    given = filters.given()
    if "@" in given.get("actor", ""):
        given["actor"] = _user_id_of(given["actor"]) or "(no such user)"  # ids, not e-mails
    with transaction():
        audit.record(actor, "audit.export", "audit_log", None, rows=total, filters=given)

    def rows() -> Iterator[list[str]]:
        yield list(EXPORT_FIELDS)
        after = 0
        while True:
            page = db.session.scalars(
                sa.select(AuditEntry)
                .where(*conditions, AuditEntry.id > after, AuditEntry.id <= upto)
                .order_by(AuditEntry.id)
                .limit(EXPORT_CHUNK)
            ).all()
            for entry in page:
                yield _row(entry)
            if len(page) < EXPORT_CHUNK:
                return
            after = page[-1].id
            db.session.expunge_all()  # keep memory flat however long the log is

    return rows()


def csv_response(rows: Iterator[list[str]], filename: str = "audit-log.csv") -> Response:
    """Stream CSV rows as a download (UTF-8 with a BOM, so spreadsheet programs read it)."""

    def generate():
        yield "\ufeff"
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        for row in rows:
            writer.writerow(row)
            if buffer.tell() > 65536:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()

    response = Response(stream_with_context(generate()), mimetype="text/csv")
    response.headers["Content-Disposition"] = f"attachment; filename={filename}"
    return response


# --- Schemas ---------------------------------------------------------------------------------


class AuditFilterSchema(Schema):
    class Meta:
        unknown = EXCLUDE  # the page's own parameters (paging) travel in the same query string

    actor = fields.String(
        validate=validate.Length(max=254),
        metadata={"description": "user id or e-mail, `partner:<id>`, or a kind (`system`)"},
    )
    action = fields.String(
        validate=validate.Length(max=64),
        metadata={"description": "action prefix: `content.` matches `content.approve`, …"},
    )
    target_type = fields.String(validate=validate.Length(max=32))
    target_id = fields.String(validate=validate.Length(max=64))
    outcome = fields.String(
        validate=validate.Length(max=16), metadata={"description": "`ok`, `denied`, `refused`"}
    )
    since = fields.Date(metadata={"description": "first day (platform time zone), included"})
    until = fields.Date(metadata={"description": "last day (platform time zone), included"})

    @pre_load
    def _ignore_blanks(self, data, **kwargs):
        # An HTML filter form sends every field, the unused ones empty.
        return {key: data.get(key) for key in data if data.get(key) not in ("", None)}

    @validates_schema
    def _range(self, data, **kwargs):
        if data.get("since") and data.get("until") and data["since"] > data["until"]:
            raise ValidationError("the last day is before the first day", "until")


class AuditListArgsSchema(AuditFilterSchema, CursorPageArgsSchema):
    pass


class AuditEntrySchema(Schema):
    id = fields.Integer()
    at = fields.DateTime()
    actor_type = fields.String()
    actor_id = fields.String(allow_none=True)
    action = fields.String()
    target_type = fields.String(attribute="object_type", allow_none=True)
    target_id = fields.String(attribute="object_id", allow_none=True)
    outcome = fields.String()
    ip = fields.String(allow_none=True)
    request_id = fields.String(allow_none=True)
    details = fields.Dict(metadata={"description": "ids and counts, never personal data"})


class AuditPageSchema(PageSchema):
    items = fields.List(fields.Nested(AuditEntrySchema))


# --- Endpoints -------------------------------------------------------------------------------


@bp.route("")
class AuditLog(MethodView):
    @api_requires("audit:view")
    @bp.arguments(AuditListArgsSchema, location="query")
    @bp.response(200, AuditPageSchema)
    def get(self, args):
        """Audit entries newest first, filtered; pass `next_cursor` back as `cursor`."""
        limit = args["limit"]
        rows = search(filters_of(args), before_id=args["cursor"], limit=limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return {"items": rows, "next_cursor": id_cursor(rows[-1].id) if more else None}


@bp.route("/export.csv")
class AuditExport(MethodView):
    @api_requires("audit:view")
    @bp.arguments(AuditFilterSchema, location="query")
    @bp.doc(responses={"200": {"description": "CSV", "content": {"text/csv": {}}}})
    def get(self, args):
        """The filtered log as CSV, oldest first. Every export is itself audited."""
        return csv_response(export_rows(current_actor(), filters_of(args)))
