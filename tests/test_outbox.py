"""Downstream hand-off: every committed batch is processed once, even if Redis lost its job."""

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


def test_batch_is_enqueued_and_processed_once(seen):
    source = create_source(SYSTEM, "s", "http")[0]
    result = ingest(source, [{"type": "track", "userId": "u", "event": f"e{i}"} for i in range(3)])
    queued = tasks().queue("ingest").jobs
    assert [job.args for job in queued] == [[result.outbox_id]]
    assert ingest_tasks.process_batch(result.outbox_id) == "processed"
    assert ingest_tasks.process_batch(result.outbox_id) == "nothing to do"  # retried job: no-op
    assert len(seen) == 1
    assert len(seen[0][0]) == 3 and seen[0][1] == result.profile_ids
    assert db.session.get(Source, source.id).last_event_at is not None


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
