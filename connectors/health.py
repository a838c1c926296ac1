"""Source health: counters, recent errors (payloads masked) and pull cursors, for the UI.

Counters are kept in each process's memory and added to ``connector_stats`` (one row per
source and five-minute bucket) at most every ``FLUSH_SECONDS``, so a busy endpoint pays
one small UPSERT per few seconds rather than a write per request. They are operational
figures, not the record: a process killed between flushes loses a few seconds of counts,
never an event. Errors are written at once (at most ``ERROR_ROWS_PER_MINUTE`` rows per
source and process, so a flood of forged requests cannot fill the table) and only the
newest ``KEEP_ERRORS`` per source are kept.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from cdp.db import db, utcnow
from cdp.exceptions import NotFound
from cdp.models import Source
from cdp.sources import register_health
from connectors.models import ConnectorCursor, ConnectorError, ConnectorStat

log = logging.getLogger(__name__)

BUCKET_SECONDS = 300
FLUSH_SECONDS = 5.0
KEEP_ERRORS = 50
ERROR_ROWS_PER_MINUTE = 20
MAX_PAYLOAD_CHARS = 2000
_FIELDS = ("requests", "events", "duplicates", "rejected", "errors")
# Kinds whose endpoints count requests through connectors.base; the /v1 API, partner sync and
# the pull jobs keep no counters (pulls report through their cursors instead).
COUNTED_KINDS = frozenset({"wechat", "miniprogram", "pos", "ecommerce", "sms"})
STATUSES = ("ok", "waiting", "warning", "failing", "disabled")

# --- masking ------------------------------------------------------------------------------

# Values of these keys (JSON "key": "value" or XML <Key>value</Key>) are masked whole.
_SECRET_KEYS = r"Encrypt|sign|signature|msg_signature|secret|session_key|access_token|code"
_PERSONAL_KEYS = (
    r"[A-Za-z_]*(?:phone|mobile|name|address|openid|unionid|open_id|open_uid|card_no|cardNo|"
    r"card_number|id_card|idCard|buyer_nick|receiver[A-Za-z_]*|email|Content|FromUserName|"
    r"member[A-Za-z_]*|Latitude|Longitude|Label|Recognition)"
)
_KEYS = rf"(?:{_SECRET_KEYS}|{_PERSONAL_KEYS})"
_JSON_VALUE = re.compile(rf'("{_KEYS}"\s*:\s*")((?:[^"\\]|\\.)*)(")', re.IGNORECASE)
_XML_VALUE = re.compile(
    rf"(<({_KEYS})>(?:<!\[CDATA\[)?)(.*?)((?:\]\]>)?</\2>)", re.IGNORECASE | re.DOTALL
)
_PATTERNS = (
    re.compile(r"(?<![\d])(?:\+?86[- ]?)?1[3-9]\d{9}(?![\d])"),  # mainland mobile numbers
    re.compile(r"(?<![\dA-Za-z])\d{17}[\dXx](?![\dA-Za-z])"),  # resident ID card numbers
    re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"),  # e-mail addresses
    re.compile(r"(?<![\w-])o[A-Za-z0-9_-]{20,40}(?![\w-])"),  # WeChat openid-like tokens
)


def _mask_value(value: str) -> str:
    if len(value) <= 4:
        return "*" * len(value)
    return f"{value[:2]}{'*' * min(len(value) - 4, 12)}{value[-2:]}"


def mask_payload(payload: bytes | str | None) -> str:
    """A request body made safe to show: personal values and secrets masked, then truncated."""
    if payload is None:
        return ""
    text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else str(payload)
    text = text[: MAX_PAYLOAD_CHARS * 4]
    text = _JSON_VALUE.sub(lambda m: m.group(1) + _mask_value(m.group(2)) + m.group(3), text)
    text = _XML_VALUE.sub(lambda m: m.group(1) + _mask_value(m.group(3)) + m.group(4), text)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: _mask_value(m.group(0)), text)
    return text if len(text) <= MAX_PAYLOAD_CHARS else text[:MAX_PAYLOAD_CHARS] + "…"


# --- counters ---------------------------------------------------------------------------


def _bucket(at: datetime) -> datetime:
    epoch = int(at.timestamp())
    return datetime.fromtimestamp(epoch - epoch % BUCKET_SECONDS, at.tzinfo)


class _Counters:
    def __init__(self):
        self.lock = threading.Lock()
        self.rows: dict[tuple[str, datetime], list] = {}
        self.flushed = time.monotonic()
        self.error_writes: dict[str, list[float]] = {}

    def add(self, source_id: str, values: dict, last_event_at: datetime | None) -> None:
        key = (source_id, _bucket(utcnow()))
        with self.lock:
            row = self.rows.setdefault(key, [0, 0, 0, 0, 0, None])
            for i, name in enumerate(_FIELDS):
                row[i] += values.get(name, 0)
            if last_event_at and (row[5] is None or last_event_at > row[5]):
                row[5] = last_event_at

    def take(self, force: bool) -> dict:
        with self.lock:
            if not self.rows or (not force and time.monotonic() - self.flushed < FLUSH_SECONDS):
                return {}
            rows, self.rows = self.rows, {}
            self.flushed = time.monotonic()
            return rows

    def put_back(self, rows: dict) -> None:
        with self.lock:
            for key, row in rows.items():
                mine = self.rows.setdefault(key, [0, 0, 0, 0, 0, None])
                for i in range(5):
                    mine[i] += row[i]
                if row[5] and (mine[5] is None or row[5] > mine[5]):
                    mine[5] = row[5]

    def may_write_error(self, source_id: str) -> bool:
        now = time.monotonic()
        with self.lock:
            recent = [t for t in self.error_writes.get(source_id, ()) if now - t < 60]
            allowed = len(recent) < ERROR_ROWS_PER_MINUTE
            if allowed:
                recent.append(now)
            self.error_writes[source_id] = recent
            return allowed


_counters = _Counters()


def count(source_id: str, last_event_at: datetime | None = None, **values: int) -> None:
    """Add to a source's counters (requests, events, duplicates, rejected, errors)."""
    _counters.add(source_id, values, last_event_at)
    flush()


def _upsert(conn, rows: dict) -> None:
    dialect = conn.dialect.name
    table = ConnectorStat.__table__
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
    excluded = insert.excluded
    later = sa.case(
        (excluded.last_event_at > table.c.last_event_at, excluded.last_event_at),
        else_=table.c.last_event_at,
    )
    statement = insert.on_conflict_do_update(
        index_elements=["source_id", "bucket"],
        set_={
            **{name: table.c[name] + excluded[name] for name in _FIELDS},
            "last_event_at": sa.func.coalesce(later, excluded.last_event_at),
        },
    )
    params = [
        {
            "source_id": s,
            "bucket": b,
            **dict(zip(_FIELDS, r[:5], strict=True)),
            "last_event_at": r[5],
        }
        for (s, b), r in sorted(rows.items(), key=lambda item: (item[0][0], item[0][1]))
    ]
    conn.execute(statement, params)


def flush(force: bool = False) -> None:
    """Write the counters gathered since the last flush (when due, or at once if forced)."""
    rows = _counters.take(force)
    by_source: dict[str, dict] = {}
    for key, row in rows.items():
        by_source.setdefault(key[0], {})[key] = row
    for source_rows in by_source.values():
        try:
            with db.engine.begin() as conn:
                _upsert(conn, source_rows)
        except sa.exc.IntegrityError:
            pass  # the source was deleted meanwhile: its counts go with it
        except sa.exc.SQLAlchemyError as exc:  # database down: keep them for the next flush
            log.warning("connector stats not flushed: %s", exc.__class__.__name__)
            _counters.put_back(source_rows)


def record_error(
    source_id: str, status: int, reason: str, payload: bytes | str | None = None
) -> None:
    """Count an error of a source and keep it (payload masked) among its latest errors."""
    _counters.add(source_id, {"errors": 1}, None)
    if not _counters.may_write_error(source_id):
        return
    table = ConnectorError.__table__
    try:
        with db.engine.begin() as conn:
            conn.execute(
                sa.insert(table).values(
                    source_id=source_id,
                    at=utcnow(),
                    status=status,
                    reason=reason[:500],
                    payload_masked=mask_payload(payload),
                )
            )
            keep = (
                sa.select(table.c.id)
                .where(table.c.source_id == source_id)
                .order_by(table.c.id.desc())
                .limit(KEEP_ERRORS)
            )
            conn.execute(
                sa.delete(table).where(table.c.source_id == source_id, table.c.id.not_in(keep))
            )
    except sa.exc.SQLAlchemyError as exc:
        log.warning("connector error not recorded: %s", exc.__class__.__name__)
    flush()


# --- the health view ---------------------------------------------------------------------


def _sums(source_id: str, since: datetime) -> dict:
    stat = ConnectorStat
    row = db.session.execute(
        sa.select(*[sa.func.coalesce(sa.func.sum(getattr(stat, f)), 0) for f in _FIELDS]).where(
            stat.source_id == source_id, stat.bucket >= _bucket(since)
        )
    ).one()
    return dict(zip(_FIELDS, (int(v) for v in row), strict=True))


def source_health(source_id: str, now: datetime | None = None) -> dict:
    """What the Sources page shows for one source: activity, errors and pull cursors.

    ``events_last_hour`` and friends count five-minute buckets, so "last hour" spans 60 to
    65 minutes. ``last_errors`` payloads are masked (phones, openids, names, secrets).
    """
    flush(force=True)
    now = now or utcnow()
    source = db.session.get(Source, source_id)
    if source is None:
        raise NotFound("no such source", "source_id")
    hour, day = (
        _sums(source_id, now - timedelta(hours=1)),
        _sums(source_id, now - timedelta(days=1)),
    )
    last_event_at = db.session.scalar(
        sa.select(sa.func.max(ConnectorStat.last_event_at)).where(
            ConnectorStat.source_id == source_id
        )
    )
    errors = db.session.scalars(
        sa.select(ConnectorError)
        .where(ConnectorError.source_id == source_id)
        .order_by(ConnectorError.id.desc())
        .limit(10)
    )
    cursors = list(
        db.session.scalars(sa.select(ConnectorCursor).where(ConnectorCursor.source_id == source_id))
    )
    last_event_at = _later(last_event_at, source.last_event_at)
    return {
        "source_id": source.id,
        "kind": source.kind,
        "enabled": source.enabled,
        "counted": source.kind in COUNTED_KINDS,
        "status": health_status(
            source.enabled,
            last_event_at,
            events_last_hour=hour["events"],
            errors_last_hour=hour["errors"],
            problems_last_24h=day["errors"] + day["rejected"],
            cursor_states=[c.status for c in cursors],
        ),
        "last_event_at": last_event_at,
        "events_last_hour": hour["events"],
        "events_last_24h": day["events"],
        "requests_last_hour": hour["requests"],
        "duplicates_last_hour": hour["duplicates"],
        "rejected_last_24h": day["rejected"],
        "errors_last_hour": hour["errors"],
        "errors_last_24h": day["errors"],
        "last_errors": [
            {"at": e.at, "status": e.status, "reason": e.reason, "payload": e.payload_masked}
            for e in errors
        ],
        "cursors": [
            {
                "name": c.name,
                "status": c.status,
                "position": {
                    k: mask_payload(v) if isinstance(v, str) else v
                    for k, v in (c.position or {}).items()
                },
                "runs": c.runs,
                "job_id": c.job_id,
                "last_started_at": c.last_started_at,
                "last_success_at": c.last_success_at,
                "last_error": c.last_error,
            }
            for c in cursors
        ],
    }


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    return max(a, b) if a and b else a or b


def health_status(
    enabled: bool,
    last_event_at: datetime | None,
    events_last_hour: int,
    errors_last_hour: int,
    problems_last_24h: int,
    cursor_states: list[str],
) -> str:
    """One word for a source: failing (refusing everything, or a pull failed), warning
    (refusals or rejected events today, a paused pull), waiting (nothing received yet), ok."""
    if not enabled:
        return "disabled"
    if "failed" in cursor_states or (errors_last_hour and not events_last_hour):
        return "failing"
    if problems_last_24h or "paused" in cursor_states:
        return "warning"
    return "ok" if last_event_at else "waiting"


def health_overview(source_ids: list[str], now: datetime | None = None) -> dict[str, dict]:
    """A status and the figures behind it for many sources at once (the sources list).

    Three small queries however many sources: the last day's counter buckets, the cursors'
    states and the sources themselves.
    """
    flush(force=True)
    now = now or utcnow()
    hour, day = _bucket(now - timedelta(hours=1)), _bucket(now - timedelta(days=1))
    stat = ConnectorStat
    recent = stat.bucket >= hour
    sums = {
        sid: (int(events), int(errors_hour), int(problems), last)
        for sid, events, errors_hour, problems, last in db.session.execute(
            sa.select(
                stat.source_id,
                sa.func.sum(sa.case((recent, stat.events), else_=0)),
                sa.func.sum(sa.case((recent, stat.errors), else_=0)),
                sa.func.sum(stat.errors + stat.rejected),
                sa.func.max(stat.last_event_at),
            )
            .where(stat.source_id.in_(source_ids), stat.bucket >= day)
            .group_by(stat.source_id)
        )
    }
    cursors: dict[str, dict[str, str]] = {}
    for sid, name, status in db.session.execute(
        sa.select(ConnectorCursor.source_id, ConnectorCursor.name, ConnectorCursor.status).where(
            ConnectorCursor.source_id.in_(source_ids)
        )
    ):
        cursors.setdefault(sid, {})[name] = status
    overview = {}
    for sid, enabled, kept_last in db.session.execute(
        sa.select(Source.id, Source.enabled, Source.last_event_at).where(Source.id.in_(source_ids))
    ):
        events, errors_hour, problems, last = sums.get(sid, (0, 0, 0, None))
        last = _later(last, kept_last)
        states = cursors.get(sid, {})
        overview[sid] = {
            "status": health_status(
                enabled, last, events, errors_hour, problems, list(states.values())
            ),
            "last_event_at": last,
            "events_last_hour": events,
            "errors_last_hour": errors_hour,
            "problems_last_24h": problems,
            "cursors": states,
        }
    return overview


register_health(source_health, health_overview)
