"""``cdp serve`` and ``cdp worker``: the long-running processes; ``cdp drain`` for catching up."""

from __future__ import annotations

import logging

import click
from flask import current_app
from flask.cli import with_appcontext
from rq.serializers import JSONSerializer
from sqlalchemy.orm import configure_mappers
from werkzeug.serving import run_simple

from cdp.ingest import inbound
from cdp.ingest import tasks as ingest_tasks
from cdp.queue import QUEUES, BackgroundLoop, ForkingWorker, bind_worker_app, tasks


@click.command("worker")
@click.option("--queues", default=",".join(QUEUES), show_default=True, help="Comma-separated.")
@click.option("--burst", is_flag=True, help="Exit when the queues are empty.")
@with_appcontext
def worker(queues, burst):
    """Run an RQ worker (with scheduler and periodic jobs) on the named queues."""
    app = current_app._get_current_object()
    task_queue = tasks()
    if task_queue.embedded:
        raise click.UsageError(
            "cdp worker needs CDP_REDIS_URL; without Redis, `cdp serve` runs jobs in-process."
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    bind_worker_app(app)
    # Configure mappers once so forked work horses do not redo it on every job.
    configure_mappers()
    names = [q.strip() for q in queues.split(",") if q.strip()]
    ticker = BackgroundLoop(app, task_queue)
    ticker.start(run_jobs=False)
    try:
        queues = task_queue.worker_queues(names, blocking_timeout=app.config["WORKER_TTL"])
        ForkingWorker(
            queues,
            connection=queues[0].connection,
            serializer=JSONSerializer,
            worker_ttl=app.config["WORKER_TTL"],
            job_monitoring_interval=10,
            maintenance_interval=60,
        ).work(with_scheduler=True, burst=burst, logging_level="INFO")
    finally:
        ticker.stop()


@click.command("serve")
@click.option("--port", type=int, envvar="CDP_PORT", default=5000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@with_appcontext
def serve(port, host):
    """Serve the web UI and APIs; without Redis, also run jobs in-process."""
    app = current_app._get_current_object()
    task_queue = tasks()
    loop = BackgroundLoop(app, task_queue)
    loop.start(run_jobs=task_queue.embedded)
    mode = "embedded worker" if task_queue.embedded else "jobs go to Redis; run `cdp worker`"
    click.echo(f"CarePath CDP on http://{host}:{port}/ ({mode}). Ctrl-C stops.")
    try:
        run_simple(host, port, app, threaded=True, use_reloader=False)
    finally:
        loop.stop()
        click.echo("Stopped.")


@click.command("drain")
@with_appcontext
def drain():
    """Resolve every pending inbound batch and process the event outbox now, then exit.

    What the drain job does, run in this process: for catching up without a worker (after
    a restore, or when the queue was lost) and for scripts that need profiles current.
    """
    resolved = 0
    with click.progressbar(length=inbound.pending_count(), label="inbound batches") as bar:
        while claimed := inbound.resolve_pending():
            bar.update(claimed)
            resolved += claimed
    left = inbound.pending_count()
    result = ingest_tasks.process_pending()
    click.echo(
        f"Resolved {resolved} inbound batches ({left} left: failed or claimed by a worker); "
        f"processed {result['processed']} outbox batches."
    )
