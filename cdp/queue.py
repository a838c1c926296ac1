"""The one place jobs are enqueued and run: RQ on Redis, or embedded without a server.

With CDP_REDIS_URL, jobs go to RQ queues on that Redis and `cdp worker` runs
them. Without it, an in-memory Redis (fakeredis) and a worker thread inside the
web process run them, so `make run` needs no server. Jobs are serialised as
JSON, never pickle; tasks take ids and must be idempotent, because a killed
worker's job is retried.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import fakeredis
from flask import Flask, current_app, has_app_context
from redis import Redis
from rq import Queue, Retry, SimpleWorker, Worker
from rq.registry import ScheduledJobRegistry, clean_registries
from rq.serializers import JSONSerializer
from rq.timeouts import TimerDeathPenalty

log = logging.getLogger(__name__)

# Named queues, one per domain, in priority order for workers.
QUEUES = ("ingest", "segments", "journeys", "delivery", "connectors", "models", "default")
# The embedded mode's worker threads, each taking these queues in order.
EMBEDDED_WORKER_GROUPS = (
    ("ingest", "segments", "connectors", "models", "default"),
    ("journeys", "delivery", "default"),
)


@dataclass(frozen=True)
class PeriodicJob:
    """A job enqueued every ``interval`` seconds by whichever worker claims the slot first."""

    name: str
    func: str  # dotted path of a @task function taking no arguments
    interval: int
    queue: str = "default"


PERIODIC_JOBS: dict[str, PeriodicJob] = {}


def register_periodic(job: PeriodicJob) -> PeriodicJob:
    PERIODIC_JOBS[job.name] = job
    return job


_worker_app: Flask | None = None


def task(fn: Callable) -> Callable:
    """Mark a function as a queue task: it runs inside a fresh app context of the worker's app."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        if has_app_context():
            return fn(*args, **kwargs)
        if _worker_app is None:
            raise RuntimeError("task run outside a worker: call bind_worker_app(app) first")
        with _worker_app.app_context():
            return fn(*args, **kwargs)

    return run


def bind_worker_app(app: Flask) -> None:
    """Tell tasks which app to run in (done by the worker process at start-up)."""
    global _worker_app
    _worker_app = app


class TaskQueue:
    """Enqueue jobs on the named RQ queues of one Redis connection."""

    def __init__(
        self, connection: Redis, embedded: bool, retries: int, timeout: int, url: str | None = None
    ):
        self.connection = connection
        self.url = url
        self.embedded = embedded
        self.retries = retries
        self.timeout = timeout
        self._queues = {
            name: Queue(name, connection=connection, serializer=JSONSerializer) for name in QUEUES
        }

    def queue(self, name: str) -> Queue:
        try:
            return self._queues[name]
        except KeyError:
            raise ValueError(f"unknown queue '{name}' (known: {', '.join(QUEUES)})") from None

    def enqueue(self, func: Callable | str, *args, queue: str = "default", job_id=None, **kw):
        """Enqueue ``func(*args)`` on ``queue`` with retries; returns the RQ job."""
        timeout = kw.pop("job_timeout", self.timeout)
        return self.queue(queue).enqueue_call(
            func,
            args=args,
            kwargs=kw or None,
            job_id=job_id,
            retry=Retry(max=self.retries, interval=[10, 30, 60]) if self.retries else None,
            timeout=timeout,
            failure_ttl=7 * 24 * 3600,
            result_ttl=3600,
        )

    def enqueue_many(self, func: Callable | str, arg_lists: list[tuple], queue: str = "default"):
        """Enqueue one job per argument tuple in a single Redis round trip."""
        q = self.queue(queue)
        retry = Retry(max=self.retries, interval=[10, 30, 60]) if self.retries else None
        return q.enqueue_many(
            [
                Queue.prepare_data(func, args=args, retry=retry, timeout=self.timeout)
                for args in arg_lists
            ]
        )

    def all_queues(self) -> list[Queue]:
        return [self._queues[name] for name in QUEUES]

    def worker_queues(self, names: list[str], blocking_timeout: int) -> list[Queue]:
        """Queues on a connection of their own whose socket outlives a blocking dequeue.

        redis-py defaults to a 5 s socket timeout, which RQ reads as a dead server
        when an idle worker waits longer than that for a job.
        """
        connection = Redis.from_url(self.url, socket_timeout=blocking_timeout + 30)
        return [
            Queue(self.queue(n).name, connection=connection, serializer=JSONSerializer)
            for n in names
        ]

    def clean_abandoned(self) -> None:
        """Retry (or fail) jobs whose worker died: their heartbeat in the registry expired."""
        for q in self.all_queues():
            clean_registries(q)

    def enqueue_due_scheduled(self) -> int:
        """Move scheduled jobs (retries with a delay) whose time has come onto their queues."""
        moved = 0
        for q in self.all_queues():
            registry = ScheduledJobRegistry(queue=q)
            for job_id in registry.get_jobs_to_schedule():
                job = q.fetch_job(job_id)
                registry.remove(job_id)
                if job is not None:
                    q.enqueue_job(job)
                    moved += 1
        return moved

    def claim_periodic(self) -> list[PeriodicJob]:
        """Enqueue the periodic jobs whose interval has passed; at most one worker wins each slot."""
        claimed = []
        for job in PERIODIC_JOBS.values():
            if self.connection.set(f"cdp:periodic:{job.name}", "1", nx=True, ex=job.interval):
                self.enqueue(job.func, queue=job.queue, job_id=None)
                claimed.append(job)
        return claimed


class EmbeddedWorker(SimpleWorker):
    """A worker that runs jobs in a thread of the web process (no signals, timer timeouts)."""

    death_penalty_class = TimerDeathPenalty

    def _install_signal_handlers(self):
        pass  # only the main thread may install signal handlers


class ForkingWorker(Worker):
    """RQ's forking worker; the horse drops inherited DB connections before running the job."""

    def main_work_horse(self, job, queue):
        if _worker_app is not None:
            from_app = _worker_app.extensions["sqlalchemy"]
            with _worker_app.app_context():
                # Sockets shared with the parent must not be used by two processes.
                from_app.engine.dispose(close=False)
        super().main_work_horse(job, queue)


class BackgroundLoop:
    """Runs the embedded worker and the periodic/scheduled-job tick on daemon threads."""

    def __init__(self, app: Flask, tasks: TaskQueue, poll: float = 0.2, tick: float = 1.0):
        self.app = app
        self.tasks = tasks
        self.poll = poll
        self.tick = tick
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self, run_jobs: bool = True) -> None:
        bind_worker_app(self.app)
        targets = [(self._tick_loop, ())]
        if run_jobs:
            # Two worker threads: a busy ingest drain (which keeps taking batches while
            # events arrive) must not hold back journey steps and sends behind it.
            targets += [(self._work_loop, (group,)) for group in EMBEDDED_WORKER_GROUPS]
        for target, args in targets:
            name = f"cdp-{target.__name__}-{'-'.join(*args) if args else 'tick'}"
            thread = threading.Thread(target=target, args=args, name=name, daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout)

    def _work_loop(self, names: tuple[str, ...]) -> None:
        queues = [self.tasks.queue(name) for name in names]
        worker = EmbeddedWorker(queues, connection=self.tasks.connection, serializer=JSONSerializer)
        while not self.stop_event.is_set():
            try:
                worker.work(burst=True, logging_level="WARNING")
            except Exception:  # keep the loop alive; the job's failure is in RQ's registry
                log.exception("embedded worker loop failed")
            self.stop_event.wait(self.poll)

    def _tick_loop(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.tasks.claim_periodic()
                if self.tasks.embedded:
                    self.tasks.enqueue_due_scheduled()
            except Exception:
                log.exception("periodic tick failed")
            self.stop_event.wait(self.tick)


def init_app(app: Flask) -> None:
    """Create the app's task queue: RQ on CDP_REDIS_URL, or an in-memory Redis."""
    url = app.config.get("REDIS_URL")
    if url:
        connection = Redis.from_url(url)
        embedded = False
    else:
        connection = fakeredis.FakeRedis(server=fakeredis.FakeServer())
        embedded = True
    app.extensions["cdp.queue"] = TaskQueue(
        connection,
        embedded=embedded,
        retries=app.config["JOB_RETRIES"],
        timeout=app.config["JOB_TIMEOUT"],
        url=url,
    )


def tasks() -> TaskQueue:
    """The task queue of the current app."""
    return current_app.extensions["cdp.queue"]


def enqueue(func: Callable | str, *args, queue: str = "default", **kwargs):
    """Enqueue a task on the current app's queue."""
    return tasks().enqueue(func, *args, queue=queue, **kwargs)
