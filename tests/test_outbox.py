"""Downstream hand-off: every committed batch is processed once, even if Redis lost its job.

Batches are handed to a drain job (``process_pending``), one queued at a time, rather than
to one job per batch; batches enqueued by id (``process_batch``) are processed once too.
"""

from datetime import timedelta

import pytest
import sqlalchemy as sa

from cdp.actors import SYSTEM
from cdp.db import db, utcnow
from cdp.ingest import tasks as ingest_tasks
from cdp.ingest.pipeline import ingest
from cdp.models import OutboxBatch, Source
from cdp.queue import tasks
from cdp.sources import create_source
from cdp.sweeper import sweep


@pytest.fixture
def seen(app_ctx):
    calls = []
    ingest_tasks.register_event_processor("test-recorder", lambda ev, pr: calls.append((ev, pr)))
    yield calls
    ingest_tasks.EVENT_PROCESSORS.pop("test-recorder")


def test_batches_share_one_queued_drain_job_and_each_is_processed_once(seen):
    source = create_source(SYSTEM, "s", "http")[0]
    results = [
        ingest(source, [{"type": "track", "userId": "u", "event": f"e{b}-{i}"} for i in range(3)])
        for b in range(3)
    ]
    queue = tasks().queue("ingest")
    # One job (not one per batch) while it has not started: it will see every batch.
    [job] = queue.jobs
    assert job.func_name == "cdp.ingest.tasks.process_pending" and job.args == []
    assert job.perform() == {"processed": 3}
    # The claimed batches are processed together: one call per processor, in id order.
    batches = [db.session.get(OutboxBatch, r.outbox_id) for r in results]
    assert [events for events, _ in seen] == [[e for b in batches for e in b.event_ids]]
    assert seen[0][1] == sorted({p for r in results for p in r.profile_ids})
    for result in results:
        batch = db.session.get(OutboxBatch, result.outbox_id)
        assert batch.processed_at is not None and batch.attempts == 1
        assert ingest_tasks.process_batch(result.outbox_id) == "nothing to do"  # retried: no-op
    assert job.perform() == {"processed": 0}
    assert len(seen) == 1
    assert db.session.get(Source, source.id).last_event_at is not None
    # Once the job has started, the next batch queues a new one.
    queue.remove(job)  # as a worker does when it takes the job
    later = ingest(source, [{"type": "track", "userId": "u", "event": "later"}])
    [job] = queue.jobs
    assert job.perform() == {"processed": 1}
    assert seen[-1][0] == db.session.get(OutboxBatch, later.outbox_id).event_ids


def test_a_batch_enqueued_by_id_is_processed_once_too(seen):
    source = create_source(SYSTEM, "s", "http")[0]
    result = ingest(source, [{"type": "track", "userId": "u", "event": "e"}])
    assert ingest_tasks.process_batch(result.outbox_id) == "processed"
    assert ingest_tasks.process_batch(result.outbox_id) == "nothing to do"
    assert ingest_tasks.process_pending() == {"processed": 0}
    assert len(seen) == 1


def test_a_failing_batch_is_retried_after_its_claim_expires_and_does_not_block_others(seen):
    source = create_source(SYSTEM, "s", "http")[0]
    bad = ingest(source, [{"type": "track", "userId": "u", "event": "bad"}])
    good = ingest(source, [{"type": "track", "userId": "u", "event": "good"}])
    bad_events = db.session.get(OutboxBatch, bad.outbox_id).event_ids

    def fussy(event_ids, profile_ids):
        if set(bad_events) & set(event_ids):  # together or alone, the bad batch fails
            raise RuntimeError("processor failed")

    ingest_tasks.register_event_processor("test-fussy", fussy)
    try:
        with pytest.raises(RuntimeError, match="1 outbox batch"):
            ingest_tasks.process_pending()
        assert db.session.get(OutboxBatch, good.outbox_id).processed_at is not None
        assert db.session.get(OutboxBatch, bad.outbox_id).processed_at is None
        assert ingest_tasks.process_pending() == {"processed": 0}  # still claimed
    finally:
        ingest_tasks.EVENT_PROCESSORS.pop("test-fussy")
    db.session.execute(sa.update(OutboxBatch).values(enqueued_at=utcnow() - timedelta(minutes=5)))
    db.session.commit()
    assert ingest_tasks.process_pending() == {"processed": 1}
    assert db.session.get(OutboxBatch, bad.outbox_id).attempts == 2


def test_sweeper_requeues_a_batch_whose_job_redis_lost(seen):
    source = create_source(SYSTEM, "s", "http")[0]
    result = ingest(source, [{"type": "track", "userId": "u", "event": "e"}])
    tasks().connection.flushall()  # Redis restarted without persistence
    assert sweep()["ingest-outbox"] == 0  # too recent to call lost
    db.session.execute(sa.update(OutboxBatch).values(enqueued_at=utcnow() - timedelta(minutes=5)))
    db.session.commit()
    assert sweep()["ingest-outbox"] == 1
    [job] = tasks().queue("ingest").jobs
    job.perform()
    assert db.session.get(OutboxBatch, result.outbox_id).processed_at is not None
    assert len(seen) == 1
