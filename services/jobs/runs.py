"""Job runs: claim a (job, period) row before doing anything, heartbeat, record errors, finish.

Exactly once per (job, period): the claim is an INSERT ... ON CONFLICT DO NOTHING on the UNIQUE
(job, period) of job_runs (PostgreSQL and SQLite alike). Whoever inserts the row owns the run; a
second claim finds the row and is a no-op, unless that run crashed (status running with a heartbeat
older than JOBS_STALE_SECONDS), failed, or ended `partial` (some customers failed): then one caller
takes it over with a compare-and-set on its heartbeat and resumes (or retries) it. Jobs make their
effects idempotent per (period, customer), so a resumed run completes only what is missing.

Statuses: running, succeeded, partial (finished, some customers failed; a trigger retries them),
failed (the job as a whole failed; a trigger resumes it).
"""
from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from models import JobRun, JobRunError, db, utcnow
from services.core.db import atomic

log = logging.getLogger("creditdesk.jobs")

MAX_ERROR = 2000


def stale_seconds() -> int:
    """Heartbeat age after which a running run counts as crashed (JOBS_STALE_SECONDS)."""
    return int(current_app.config["JOBS_STALE_SECONDS"])


def host_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:128]


@dataclass
class Claim:
    """The outcome of a claim: `acquired` means this caller runs it; `resumed` a takeover."""

    run: JobRun
    acquired: bool
    resumed: bool = False

    @property
    def run_id(self) -> int:
        return self.run.id


def _insert(s: Session):
    dialect = s.get_bind().dialect.name
    mod = postgresql if dialect == "postgresql" else sqlite
    return mod.insert(JobRun.__table__)


def is_stale(run: JobRun, now: datetime | None = None, stale: int | None = None) -> bool:
    if run.status != "running":
        return False
    now = now or utcnow()
    beat = run.heartbeat_at or run.started_at
    return beat <= now - timedelta(seconds=stale_seconds() if stale is None else stale)


def claim(*, job: str, period: str, trigger: str = "schedule", details: dict | None = None) -> Claim:
    """Claim the run of `job` for `period`; a concurrent or finished claim is a no-op."""
    now = utcnow()
    with atomic() as s:
        stmt = _insert(s).values(job=job, period=period, status="running", trigger=trigger,
                                 host=host_id(), started_at=now, heartbeat_at=now,
                                 users_count=0, processed_count=0, error_count=0,
                                 details=details)
        new_id = s.execute(stmt.on_conflict_do_nothing().returning(JobRun.__table__.c.id)).scalar()
    if new_id is not None:
        return Claim(db.session.get(JobRun, new_id), acquired=True)
    with atomic() as s:
        run = s.scalar(select(JobRun).where(JobRun.job == job, JobRun.period == period)
                       .execution_options(populate_existing=True))
        if run.status == "succeeded" or (run.status == "running" and not is_stale(run, now)):
            return Claim(run, acquired=False)
        # Crashed (stale heartbeat), failed or partial: take it over, once, whoever wins the
        # compare-and-set (a partial run is retried: only its customers still missing).
        taken = s.execute(
            update(JobRun).where(JobRun.id == run.id, JobRun.status == run.status,
                                 JobRun.heartbeat_at.is_(run.heartbeat_at) if run.heartbeat_at is None
                                 else JobRun.heartbeat_at == run.heartbeat_at)
            .values(status="running", heartbeat_at=now, host=host_id(), trigger=trigger,
                    finished_at=None, error=None)
            .execution_options(synchronize_session=False)).rowcount
    db.session.expire_all()
    run = db.session.get(JobRun, run.id)
    if taken == 1:
        log.warning("job.resumed", extra={"job": job, "period": period, "job_run_id": run.id})
    return Claim(run, acquired=taken == 1, resumed=taken == 1)


def heartbeat(s: Session, run_id: int, **counts) -> None:
    """Touch the heartbeat (and counts) inside the caller's transaction."""
    s.execute(update(JobRun).where(JobRun.id == run_id).values(heartbeat_at=utcnow(), **counts)
              .execution_options(synchronize_session=False))


def add_counts(s: Session, run_id: int, *, users: int = 0, processed: int = 0,
               errors: int = 0) -> None:
    """Increment counts with the effects they count, in the same transaction (crash-consistent)."""
    s.execute(update(JobRun).where(JobRun.id == run_id).values(
        heartbeat_at=utcnow(), users_count=JobRun.users_count + users,
        processed_count=JobRun.processed_count + processed,
        error_count=JobRun.error_count + errors).execution_options(synchronize_session=False))


def record_error(*, run_id: int, customer_id: int | None, error: str) -> None:
    """One customer's failure, in its own transaction so that it survives the run."""
    with atomic() as s:
        s.add(JobRunError(run_id=run_id, customer_id=customer_id, error=error[:MAX_ERROR]))
        add_counts(s, run_id, errors=1)


def finish(*, run_id: int, status: str = "succeeded", error: str | None = None,
           details: dict | None = None, **counts) -> JobRun:
    """Close a run: status, finish time, final counts and details."""
    values = dict(status=status, finished_at=utcnow(), heartbeat_at=utcnow(), **counts)
    if error is not None:
        values["error"] = error[:MAX_ERROR]
    if details is not None:
        values["details"] = details
    with atomic() as s:
        s.execute(update(JobRun).where(JobRun.id == run_id).values(**values)
                  .execution_options(synchronize_session=False))
    db.session.expire_all()
    return db.session.get(JobRun, run_id)


def fail(*, run_id: int, error: BaseException | str, details: dict | None = None) -> JobRun:
    db.session.rollback()
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return finish(run_id=run_id, status="failed", error=text, details=details)


# --- reads for the dashboard and the scheduler -----------------------------------------------

def get(run_id: int) -> JobRun | None:
    return db.session.get(JobRun, run_id)


def find(*, job: str, period: str) -> JobRun | None:
    return db.session.scalar(select(JobRun).where(JobRun.job == job, JobRun.period == period))


def recent(*, job: str | None = None, limit: int = 10, before_id: int | None = None) -> list[JobRun]:
    q = select(JobRun)
    if job:
        q = q.where(JobRun.job == job)
    if before_id:
        q = q.where(JobRun.id < before_id)
    return list(db.session.scalars(q.order_by(JobRun.id.desc()).limit(limit)))


def errors(*, run_id: int, limit: int = 50, after_id: int | None = None) -> list[JobRunError]:
    q = select(JobRunError).where(JobRunError.run_id == run_id)
    if after_id:
        q = q.where(JobRunError.id > after_id)
    return list(db.session.scalars(q.order_by(JobRunError.id).limit(limit)))


def stale_runs(*, now: datetime | None = None) -> list[JobRun]:
    """Runs still marked running whose heartbeat stopped: their process died."""
    now = now or utcnow()
    cutoff = now - timedelta(seconds=stale_seconds())
    return list(db.session.scalars(select(JobRun).where(
        JobRun.status == "running", func.coalesce(JobRun.heartbeat_at, JobRun.started_at) <= cutoff)))


def last_reconcile() -> JobRun | None:
    """The latest finished ledger check, for the overview's ledger-health card."""
    return db.session.scalar(select(JobRun).where(
        JobRun.job == "reconcile_ledger", JobRun.status == "succeeded")
        .order_by(JobRun.finished_at.desc()).limit(1))


def prune(*, job: str, older_than: datetime) -> int:
    """Delete runs of a frequent job that did nothing, older than a date (keeps the page light)."""
    with atomic() as s:
        ids = select(JobRun.id).where(JobRun.job == job, JobRun.status == "succeeded",
                                      JobRun.processed_count == 0, JobRun.error_count == 0,
                                      JobRun.started_at < older_than)
        return s.execute(JobRun.__table__.delete().where(JobRun.id.in_(ids))).rowcount


def run(*, job: str, period: str, trigger: str, execute) -> tuple[JobRun, bool]:
    """Claim (job, period) and, when this caller owns it, execute(run_id, resumed) -> JobRun.

    Returns (run, ran): ran is False when the period had been claimed already (a no-op).
    """
    c = claim(job=job, period=period, trigger=trigger)
    if not c.acquired:
        log.info("%s.skipped job_run_id=%s period=%s status=%s", job, c.run.id, period, c.run.status,
                 extra={"job_run_id": c.run.id, "period": period})
        return c.run, False
    return execute(c.run_id, c.resumed), True


def guarded(job: str, run_id: int, body) -> JobRun:
    """Run body() -> dict(counts/details) for a claimed run; log start and finish; fail on error."""
    r = get(run_id)
    log.info("%s.starting job_run_id=%s period=%s", job, run_id, r.period,
             extra={"job_run_id": run_id, "period": r.period})
    try:
        out = body() or {}
    except Exception as err:
        log.exception("%s.failed job_run_id=%s", job, run_id, extra={"job_run_id": run_id})
        fail(run_id=run_id, error=err)
        raise
    done = finish(run_id=run_id, **out)
    log.info("%s.finished job_run_id=%s usersCount=%s processedCount=%s errorCount=%s", job, run_id,
             done.users_count, done.processed_count, done.error_count,
             extra={"job_run_id": run_id, "usersCount": done.users_count,
                    "processedCount": done.processed_count, "errorCount": done.error_count})
    return done
