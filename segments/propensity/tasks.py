"""Queue tasks of the ``models`` queue: training and scoring jobs, and scheduled rescoring.

Tasks take a JobRun id and read their parameters from it, so a retried job does the same
work; a job already finished is not run again.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from cdp import jobs
from cdp.actors import SYSTEM, Actor
from cdp.db import db, utcnow
from cdp.models import JobRun, User
from cdp.queue import PeriodicJob, task
from segments.propensity import labels, registry, service, training

RESCORE = PeriodicJob(
    name="models-rescore",
    func="segments.propensity.tasks.rescore_due",
    interval=3600,
    queue="models",
)


def _pending(job_id: int) -> JobRun | None:
    job = db.session.get(JobRun, job_id)
    return None if job is None or job.status in ("succeeded", "failed") else job


def _actor(job: JobRun) -> Actor:
    """The user who asked for the job (their role as it is now), or the system."""
    user = db.session.get(User, job.created_by_id) if job.created_by_id else None
    if user is None or not user.is_active:
        return SYSTEM
    return Actor(kind="user", user_id=user.id, role=user.role, request_id=f"job-{job.id}")


@task
def train_job(job_id: int) -> str:
    job = _pending(job_id)
    if job is None:
        return "nothing to do"
    p = job.params
    spec = training.TrainSpec(
        name=p["name"],
        target=labels.Target(p["target_event"], list(p.get("where") or [])),
        horizon_days=p["horizon_days"],
        cutoff=datetime.fromisoformat(p["cutoff"]),
        profile_kind=p["profile_kind"],
        algorithm=p["algorithm"],
    )
    version = service.train_model(_actor(job), spec, p.get("activate"), job_id=job.id)
    return f"version {version.version}"


@task
def score_job(job_id: int) -> str:
    job = _pending(job_id)
    if job is None:
        return "nothing to do"
    scored = service.score_model(_actor(job), job.params["name"], job_id=job.id)
    return f"{len(scored.frame)} profiles"


def due(now: datetime | None = None) -> list[str]:
    """Models whose active version was never scored, or not within ``rescore_hours``."""
    now = now or utcnow()
    names = []
    for model, version in registry.active_versions():
        if model.rescore_hours is None:
            continue
        interval = timedelta(hours=model.rescore_hours)
        if version.scored_at is None or version.scored_at + interval <= now:
            names.append(model.name)
    return sorted(names)


@task
def rescore_due() -> int:
    """Periodic: score the models that are due, one job run each."""
    names = due()
    for name in names:
        job = jobs.create_job(SYSTEM, service.SCORE_JOB, {"name": name, "scheduled": True}, 100)
        try:
            service.score_model(SYSTEM, name, job_id=job.id)
        except Exception:  # recorded on the job run; the other models still get scored
            continue
    return len(names)
