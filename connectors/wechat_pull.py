"""WeChat follower sync: every follower of an official account, with unionid, as profiles.

The job pages the follower list (``next_openid``, 10,000 per page) and fetches user info in
batches of 100; each batch is one ``identify`` per follower, committed through the
pipeline before the cursor moves past it. The cursor (``connector_cursors``, name
``followers``) holds the page's starting ``next_openid`` and the offset inside it, so a
run that fails (timeouts, 5xx after retries, the database) or pauses (rate limit
45009) resumes where it stopped; a finished run resets it for the next full pass. The
follower list API has no "changed since", so each pass reads everyone; followers whose
info did not change produce the same dedupe key and are not stored again.

Runs on demand (``start_follower_sync``; ``cdp connectors sync``) and on schedule: the
periodic ``sync_due_sources`` starts sources whose last pass is older than their
``sync_interval_hours`` (default 24) and retries paused/failed ones after an hour.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import timedelta

import sqlalchemy as sa

from cdp import jobs
from cdp.actors import SYSTEM, Actor
from cdp.auth.permissions import require
from cdp.db import db, utcnow
from cdp.exceptions import NotFound, Unavailable, ValidationFailed
from cdp.ingest.pipeline import ingest
from cdp.models import Source
from cdp.queue import PeriodicJob, enqueue, task
from cdp.sources import get_kind, source_options, validate_options
from connectors.base import external_id, flag, iso_from_unix
from connectors.models import ConnectorCursor
from connectors.wechat_api import RateLimited, WechatApiError, WechatClient

log = logging.getLogger(__name__)

CURSOR = "followers"
JOB_KIND = "wechat_follower_sync"
PAGE_SIZE = 10_000
INFO_BATCH = 100
STALE_RUN = timedelta(minutes=5)
RETRY_AFTER = timedelta(hours=1)
PERIODIC = PeriodicJob(
    name="wechat_follower_sync",
    func="connectors.wechat_pull.sync_due_sources",
    interval=3600,
    queue="connectors",
)
# Tests swap in a client factory pointing at a stub server with no back-off sleeps.
client_factory = WechatClient


def follower_message(info: dict, app_id: str, synced_at: str) -> dict | None:
    """One user-info record as an ``identify`` (None without an openid)."""
    openid = info.get("openid")
    if not openid:
        return None
    ids = [external_id("wechat_openid", openid, app_id)]
    if info.get("unionid"):
        ids.append(external_id("wechat_unionid", info["unionid"]))
    subscribed = bool(info.get("subscribe"))
    traits = {"wechat_subscribed": subscribed}
    if subscribed:
        if info.get("subscribe_time"):
            traits["wechat_subscribe_time"] = iso_from_unix(int(info["subscribe_time"]))
        for wire, trait in (
            ("subscribe_scene", "wechat_subscribe_scene"),
            ("language", "wechat_language"),
            ("tagid_list", "wechat_tag_ids"),
        ):
            if info.get(wire) not in (None, ""):
                traits[trait] = info[wire]
        scene = info.get("qr_scene_str") or info.get("qr_scene")
        if scene:
            traits["wechat_qr_scene"] = str(scene)
    fingerprint = repr((openid, info.get("unionid"), sorted(traits.items(), key=str)))
    digest = hashlib.sha256(fingerprint.encode()).hexdigest()[:32]
    return {
        "type": "identify",
        "messageId": f"wx-sync:{digest}",
        "timestamp": synced_at,
        "traits": traits,
        "context": {"externalIds": ids, "channel": "wechat"},
    }


def _cursor(source_id: str) -> ConnectorCursor:
    cursor = db.session.get(ConnectorCursor, (source_id, CURSOR))
    if cursor is None:
        cursor = ConnectorCursor(source_id=source_id, name=CURSOR, position={}, status="idle")
        db.session.add(cursor)
        db.session.commit()
    return cursor


def _claim(source_id: str, job_id: int | None) -> bool:
    """Mark the cursor running for this job unless another live run holds it."""
    _cursor(source_id)
    now = utcnow()
    table = ConnectorCursor
    claimed = db.session.execute(
        sa.update(table)
        .where(
            table.source_id == source_id,
            table.name == CURSOR,
            sa.or_(
                table.status != "running",
                table.updated_at < now - STALE_RUN,
                table.job_id == job_id if job_id else sa.false(),
            ),
        )
        .values(status="running", job_id=job_id, last_started_at=now, updated_at=now)
        .returning(table.source_id)
    ).first()
    db.session.commit()
    return claimed is not None


def _save(cursor: ConnectorCursor, **values) -> None:
    for key, value in values.items():
        setattr(cursor, key, value)
    cursor.updated_at = utcnow()
    db.session.commit()


def start_follower_sync(actor: Actor, source_id: str):
    """Queue a follower sync of a ``wechat`` source now; returns its JobRun."""
    require(actor, "sources:edit")
    source = db.session.get(Source, source_id)
    if source is None or source.kind != "wechat":
        raise NotFound("no such wechat source", "source_id")
    if not source_options(source).get("app_secret"):
        raise ValidationFailed(
            "the source has no app_secret: the WeChat API needs it", "app_secret"
        )
    return _queue(actor, source_id)


def _queue(actor: Actor, source_id: str):
    job = jobs.create_job(actor, JOB_KIND, {"source_id": source_id})
    enqueue("connectors.wechat_pull.sync_followers", source_id, job.id, queue="connectors")
    return job


def _ingest(source: Source, messages: list[dict]) -> None:
    if messages:
        ingest(source, messages)


def run_sync(source: Source, options: dict, cursor: ConnectorCursor, job_id: int | None) -> int:
    """The paging loop; returns the followers synced in this pass (raises on failure)."""
    client = client_factory(
        options["app_id"],
        options["app_secret"],
        options.get("api_base"),
        rate_per_second=float(options.get("rate_per_second", 20)),
    )
    position = dict(cursor.position or {})
    position.setdefault("page_openid", "")
    position.setdefault("offset", 0)
    position.setdefault("done", 0)
    first = True
    while True:
        page = client.followers(position["page_openid"])
        openids = list((page.get("data") or {}).get("openid") or [])
        total = page.get("total")
        if job_id and first:
            jobs.mark_running(job_id, total=total)
            first = False
        for start in range(position["offset"], len(openids), INFO_BATCH):
            chunk = openids[start : start + INFO_BATCH]
            synced_at = utcnow().isoformat()
            infos = client.users_info(chunk)
            messages = [follower_message(i, options["app_id"], synced_at) for i in infos]
            _ingest(source, [m for m in messages if m])
            position.update(offset=start + len(chunk), done=position["done"] + len(chunk))
            _save(cursor, position=dict(position), last_error="")
            if job_id:
                jobs.report_progress(
                    job_id, position["done"], f"{position['done']}/{total} followers"
                )
        next_openid = page.get("next_openid") or ""
        if not openids or not next_openid or len(openids) < PAGE_SIZE:
            return position["done"]
        position.update(page_openid=next_openid, offset=0)
        _save(cursor, position=dict(position))


@task
def sync_followers(source_id: str, job_id: int | None = None) -> dict:
    """Sync (or resume syncing) the followers of one source; idempotent and resumable."""
    source = db.session.get(Source, source_id)
    if source is None or source.kind != "wechat" or not source.enabled:
        if job_id:
            jobs.mark_finished(job_id, "source missing, disabled or not wechat", failed=True)
        return {"status": "skipped"}
    options = source_options(source)
    if not options.get("app_secret"):
        if job_id:
            jobs.mark_finished(job_id, "no app_secret", failed=True)
        return {"status": "skipped"}
    if not _claim(source_id, job_id):
        if job_id:
            jobs.mark_finished(job_id, "another sync of this source is running", failed=True)
        return {"status": "busy"}
    cursor = _cursor(source_id)
    db.session.refresh(cursor)
    try:
        done = run_sync(source, options, cursor, job_id)
    except (RateLimited, WechatApiError, Unavailable, sa.exc.OperationalError) as exc:
        db.session.rollback()
        status = "paused" if isinstance(exc, RateLimited) else "failed"
        message = f"{status}: {str(exc)[:300]}; resumes from the cursor"
        _save(cursor, status=status, last_error=str(exc)[:500], last_finished_at=utcnow())
        if job_id:
            jobs.mark_finished(job_id, message, failed=True)
        log.warning("follower sync %s %s", source_id, message)
        return {"status": status, "error": str(exc)[:300], "position": cursor.position}
    now = utcnow()
    _save(
        cursor,
        status="idle",
        position={"page_openid": "", "offset": 0, "done": 0, "last_total": done},
        runs=(cursor.runs or 0) + 1,
        last_finished_at=now,
        last_success_at=now,
        last_error="",
    )
    if job_id:
        jobs.mark_finished(job_id, f"{done} followers synced")
    return {"status": "done", "followers": done}


def _valid(source: Source, options: dict) -> bool:
    """Options that pass the kind's schema (rows written by hand, e.g. demo seeds, may not)."""
    try:
        validate_options(get_kind(source.kind), options)
    except ValidationFailed:
        return False
    return True


@task
def sync_due_sources() -> list[str]:
    """Periodic: queue a sync for each wechat source that is due (or due for a retry)."""

    now, started = utcnow(), []
    for source in db.session.scalars(sa.select(Source).where(Source.kind == "wechat")):
        options = source_options(source)
        if not source.enabled or not options.get("app_secret") or not _valid(source, options):
            continue
        if not flag(options.get("sync_followers"), True):
            continue
        cursor = db.session.get(ConnectorCursor, (source.id, CURSOR))
        interval = timedelta(hours=int(options.get("sync_interval_hours", 24)))
        if cursor is not None:
            if cursor.status == "running" and cursor.updated_at > now - STALE_RUN:
                continue
            last = cursor.last_success_at
            retry = cursor.status in ("paused", "failed")
            finished = cursor.last_finished_at
            if retry and finished and finished > now - RETRY_AFTER:
                continue
            if not retry and last and last > now - interval:
                continue
        _queue(SYSTEM, source.id)
        started.append(source.id)
    return started
