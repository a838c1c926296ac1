"""Pulls on demand: the "Sync now" of a source page and ``cdp connectors sync``.

The WeChat follower sync and the JD / Tmall order pull also run on schedule; this module
gives their source kinds the ``SourceKind`` pull methods, so the UI (which may not import
connectors) can queue one through ``cdp.sources`` and show how the newest run is doing.
The kinds live here, not in ``wechat`` / ``ecommerce``, because the pull modules import those.
"""

from __future__ import annotations

import sqlalchemy as sa

from cdp import audit
from cdp.actors import Actor
from cdp.auth.permissions import require
from cdp.db import db, transaction
from cdp.exceptions import ValidationFailed
from cdp.models import JobRun, Source
from cdp.sources import source_options
from connectors import ecommerce_pull, wechat_pull
from connectors.ecommerce import EcommerceSourceKind
from connectors.wechat import WechatSourceKind

RECENT_JOBS = 200  # newest pull jobs of a kind searched for a source's latest run


def queue_pull(actor: Actor, kind, source: Source, start, refusal: tuple[str, str]) -> JobRun:
    """Queue ``start(actor, source_id)`` and record who asked for it; ``refusal`` (message,
    field) when ``kind`` cannot pull this source (disabled, missing credentials)."""
    require(actor, "sources:edit")
    if not kind.can_pull(source):
        raise ValidationFailed(*refusal)
    job = start(actor, source.id)
    with transaction():
        audit.record(actor, "source.sync", "source", source.id, job_id=job.id, job_kind=job.kind)
    return job


def latest_job(source: Source, job_kind: str) -> JobRun | None:
    query = (
        sa.select(JobRun)
        .where(JobRun.kind == job_kind)
        .order_by(JobRun.id.desc())
        .limit(RECENT_JOBS)
    )
    # Job parameters are JSON: matched here rather than with dialect-specific SQL.
    return next(
        (job for job in db.session.scalars(query) if job.params.get("source_id") == source.id),
        None,
    )


class WechatPullKind(WechatSourceKind):
    """The official account, whose followers can be synced with its ``app_secret``."""

    def can_pull(self, source: Source) -> bool:
        return source.enabled and bool(source_options(source).get("app_secret"))

    def start_pull(self, actor: Actor, source: Source) -> JobRun:
        refusal = (
            "only an enabled official account with an app_secret syncs followers",
            "app_secret",
        )
        return queue_pull(actor, self, source, wechat_pull.start_follower_sync, refusal)

    def latest_pull(self, source: Source) -> JobRun | None:
        return latest_job(source, wechat_pull.JOB_KIND)


class EcommercePullKind(EcommerceSourceKind):
    """A shop; JD / Tmall / Taobao ones with an ``api_base`` have their orders pulled."""

    def can_pull(self, source: Source) -> bool:
        options = source_options(source)
        return (
            source.enabled
            and options.get("platform") in ecommerce_pull.DIALECTS
            and bool(options.get("api_base"))
        )

    def start_pull(self, actor: Actor, source: Source) -> JobRun:
        refusal = (
            "only an enabled JD, Tmall or Taobao shop with an api_base is pulled",
            "platform",
        )
        return queue_pull(actor, self, source, ecommerce_pull.start_order_pull, refusal)

    def latest_pull(self, source: Source) -> JobRun | None:
        return latest_job(source, ecommerce_pull.JOB_KIND)
