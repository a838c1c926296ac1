"""The periodic sweeper: recovers abandoned jobs and runs the catch-up hooks other packages add.

Redis is only a work queue; anything due (a journey step, an unprocessed event
batch) is found again from the database by a hook registered here, so losing
Redis or a worker delays work but never loses it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from flask import Flask

from cdp.queue import PeriodicJob, register_periodic, task, tasks

log = logging.getLogger(__name__)

SWEEPER = PeriodicJob(name="sweeper", func="cdp.sweeper.sweep", interval=60, queue="default")

SWEEP_HOOKS: dict[str, Callable[[], object]] = {}


def register_sweep_hook(name: str, hook: Callable[[], object]) -> None:
    """Run ``hook()`` on every sweep (it must be idempotent and cheap when nothing is due)."""
    SWEEP_HOOKS[name] = hook


@task
def sweep() -> dict:
    """Retry jobs of dead workers, then run every registered hook; report what each did."""
    tasks().clean_abandoned()
    report = {}
    for name, hook in SWEEP_HOOKS.items():
        try:
            report[name] = hook()
        except Exception:  # one failing hook must not starve the others
            log.exception("sweep hook %s failed", name)
            report[name] = "failed"
    return report


def init_app(app: Flask) -> None:
    register_periodic(SWEEPER)
