"""Background work of the loyalty domain: member syncs, settling redemptions, expiry.

Tasks take ids and are idempotent: a sync resumes after its last saved chunk, and expiry
only touches what is still due.
"""

from __future__ import annotations

import logging

from cdp.actors import Actor
from cdp.db import db
from cdp.ingest.tasks import process_batch
from cdp.loyalty.common import pending_batches
from cdp.loyalty.ledger import expire_points
from cdp.loyalty.redemptions import expire_coupons
from cdp.loyalty.settle import settle_redemptions
from cdp.loyalty.syncs import run_sync, stale_syncs
from cdp.queue import PeriodicJob, enqueue, task, tasks

log = logging.getLogger(__name__)

EXPIRY_JOB = PeriodicJob(
    name="loyalty-expiry", func="cdp.loyalty.tasks.expire_due", interval=600, queue="default"
)
EXPIRY_ACTOR = Actor.system("loyalty-expiry")
EVENTS_JOB = PeriodicJob(
    name="loyalty-events", func="cdp.loyalty.tasks.hand_off_events", interval=2, queue="ingest"
)


@task
def hand_off_events() -> int:
    """Settle new redemptions, then enqueue every committed loyalty event batch not yet enqueued."""
    settle_redemptions()
    ids = pending_batches()
    if ids:
        tasks().enqueue_many(process_batch, [(i,) for i in ids], queue="ingest")
    return len(ids)


@task
def run_member_sync(sync_id: int) -> str:
    """Process (or resume) one member sync."""
    sync = run_sync(sync_id)
    return sync.status if sync is not None else "missing"


@task
def expire_due() -> dict:
    """Expire coupons past their date and points past theirs (FIFO)."""
    return {"coupons": expire_coupons(EXPIRY_ACTOR), "points": expire_points(EXPIRY_ACTOR)}


def requeue_stale_syncs() -> int:
    """Sweep hook: enqueue again member syncs whose job was lost with Redis or a worker."""
    ids = stale_syncs()
    db.session.rollback()
    for sync_id in ids:
        enqueue(run_member_sync, sync_id, queue="connectors")
    return len(ids)
