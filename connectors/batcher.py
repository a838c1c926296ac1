"""Group commit for providers that push one event per request (WeChat, mini-programs).

A WeChat push must be committed before we answer ``success``, and a transaction per
push costs milliseconds. Requests handled at the same time by the threads of one process
are therefore committed together: the first request for a source becomes the *leader*
and ingests everything queued for that source in one ``ingest`` call; requests arriving
meanwhile wait, and when the leader is done the oldest waiter leads the next batch. No
request waits for a timer: a lone request is committed at once, and batches grow only
when requests overlap (gunicorn ``gthread`` workers, or any threaded server).

Each request still gets its own answer after the commit that holds its events, so the
"acked means durable" rule is unchanged. If the database is down, every request of the
batch gets the 503. A waiter that is not committed within ``WAIT_SECONDS`` (WeChat gives
up after 5 s) answers 503 too; if its batch commits later, WeChat's retry is deduped.
"""

from __future__ import annotations

import contextlib
import fcntl
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

from flask import current_app
from werkzeug.exceptions import HTTPException

from cdp.db import db, utcnow
from cdp.models import Source
from connectors.base import ingest_messages, unavailable

MAX_BATCH_EVENTS = 500
WAIT_SECONDS = 4.0


@dataclass
class Submission:
    messages: list
    received_at: datetime
    wake: threading.Event = field(default_factory=threading.Event)
    lead: bool = False
    finished: bool = False
    error: BaseException | None = None
    rejected: list = field(default_factory=list)


class GroupCommitter:
    def __init__(self, max_events: int = MAX_BATCH_EVENTS, wait_seconds: float = WAIT_SECONDS):
        self.max_events = max_events
        self.wait_seconds = wait_seconds
        self.lock = threading.Lock()
        self.pending: dict[str, list[Submission]] = {}
        self.leading: set[str] = set()
        self.batches = 0
        self.batched_requests = 0

    def submit(self, source: Source, messages: list, received_at: datetime | None = None) -> list:
        """Commit ``messages`` (alone or with concurrent requests); return their rejections."""
        sub = Submission(messages, received_at or utcnow())
        deadline = time.monotonic() + self.wait_seconds
        with self.lock:
            self.pending.setdefault(source.id, []).append(sub)
            if source.id not in self.leading:
                self.leading.add(source.id)
                sub.lead = True
        while not sub.finished:
            if sub.lead:
                self._lead(source)
                continue
            woken = sub.wake.wait(max(0.0, deadline - time.monotonic()))
            with self.lock:
                sub.wake.clear()
                if sub.finished or sub.lead:
                    continue
                if not woken:  # give up; if our events were taken they still commit
                    queue = self.pending.get(source.id) or []
                    if sub in queue:
                        queue.remove(sub)
                    raise unavailable()
        if sub.error is not None:
            raise sub.error
        return sub.rejected

    def _take(self, source_id: str) -> list[Submission]:
        queue = self.pending.get(source_id) or []
        batch, size = [], 0
        while queue and (not batch or size + len(queue[0].messages) <= self.max_events):
            sub = queue.pop(0)
            batch.append(sub)
            size += len(sub.messages)
        return batch

    def _lead(self, source: Source) -> None:
        """Commit the oldest queued requests (ours first), then pass the lead on."""
        with self.lock:
            batch = self._take(source.id)
        try:
            self._commit(source, batch)
        finally:
            with self.lock:
                for sub in batch:
                    sub.finished = True
                queue = self.pending.get(source.id)
                if queue:  # the oldest waiter leads the next batch; we answer our request now
                    queue[0].lead = True
                    queue[0].wake.set()
                else:
                    self.pending.pop(source.id, None)
                    self.leading.discard(source.id)
            for sub in batch:
                sub.wake.set()

    def _commit(self, source: Source, batch: list[Submission]) -> None:
        self.batches += 1
        self.batched_requests += len(batch)
        try:
            self._ingest(source, batch)
        except HTTPException as exc:  # 503: the database is down for everyone
            for sub in batch:
                sub.error = exc
        except Exception as exc:
            if len(batch) == 1:
                batch[0].error = exc
                return
            # A bug tripped by one request must not fail its batch-mates: one by one.
            for sub in batch:
                try:
                    self._ingest(source, [sub])
                except Exception as own:
                    sub.error = own

    @staticmethod
    def _ingest(source: Source, batch: list[Submission]) -> None:
        messages = [m for sub in batch for m in sub.messages]
        received_at = min(s.received_at for s in batch)
        with writer_lock():
            result = ingest_messages(
                source,
                messages,
                received_at,
                requests=len(batch),
                defer=current_app.config["INGEST_DEFER_RESOLUTION"],
            )
        offset = 0
        for sub in batch:
            end = offset + len(sub.messages)
            sub.rejected = [
                {**r, "index": r["index"] - offset}
                for r in result.rejected
                if offset <= r["index"] < end
            ]
            offset = end


@contextlib.contextmanager
def writer_lock():
    """On a SQLite file, take turns with the other web processes through ``flock``.

    SQLite lets one writer in at a time and makes the others poll with growing sleeps
    (1, 2, 5 … 100 ms); two gunicorn workers committing batches then spend much of their
    time asleep. Waiting on a file lock instead wakes the next process the moment the
    previous commit ends, and releases the GIL meanwhile, so this process's other threads
    keep reading requests (and the next batch grows). PostgreSQL needs none of this.
    """
    path = _lock_path()
    if path is None:
        yield
        return
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _lock_path() -> str | None:
    url = db.engine.url
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return url.database + ".connectors.lock"


_committer = GroupCommitter()


def submit(source: Source, messages: list, received_at: datetime | None = None) -> list:
    """Commit ``messages`` of one request, grouped with concurrent requests of the source."""
    return _committer.submit(source, messages, received_at)
