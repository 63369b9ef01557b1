"""Scheduled credit jobs: the declarative list (JOBS), one module per job calling services.

A job module exposes `run(*, period=None, trigger="schedule") -> JobRun` (claim + execute) and
`execute(run_id, resumed=False) -> JobRun` (carry out a run already claimed); its JobSpec holds
both. schedules.py reads each job's schedule, leader.py elects the one process that runs them,
scheduler.py runs them there.
"""
from __future__ import annotations

import logging
import threading

from flask import Flask

from jobs import (
    cleanup_idempotency,
    deliver_webhooks,
    distribute_credits,
    expire_credits,
    expiry_notices,
    process_auto_topups,
    reconcile_ledger,
    recover_timeouts,
    rollup_ledger,
)
from jobs.runner_jobs import RUNNER_JOBS
from jobs.spec import JobSpec
from models import utcnow
from services.core import audit
from services.core.db import atomic
from services.core.errors import Conflict, NotFound
from services.jobs import runs as jobruns

log = logging.getLogger("creditdesk.jobs")


def _job(module, title: str, cron: str, misfire: int, period: str, description: str) -> JobSpec:
    """The JobSpec of a job module: named like the module, running its run/execute."""
    return JobSpec(module.__name__.rpartition(".")[2], title, description, cron, misfire, period,
                   run=module.run, execute=module.execute)


JOBS: dict[str, JobSpec] = {j.name: j for j in [
    _job(distribute_credits, "Monthly credit distribution", "5 0 1 * *", 2880, "%Y-%m",
         "Expire due credits, then grant free, yearly and lifetime customers their monthly "
         "credits (monthly subscribers get theirs from the paid invoice)."),
    _job(expire_credits, "Credit expiry", "0 * * * *", 30, "%Y-%m-%dT%H",
         "One expiry entry per grant past expires_at (plus grace) with credits left."),
    _job(recover_timeouts, "Task timeout recovery", "* * * * *", 2, "%Y-%m-%dT%H:%M",
         "Tasks past their deadline in pending or processing: timed_out and fully refunded."),
    _job(reconcile_ledger, "Ledger reconciliation", "30 2 * * *", 360, "%Y-%m-%d",
         "Check the ledger invariants and record the result for the overview."),
    _job(rollup_ledger, "Analytics rollups", "15 * * * *", 60, "%Y-%m-%dT%H",
         "Recompute the daily ledger rollups (ledger_daily) of complete UTC days for analytics."),
    _job(expiry_notices, "Expiry notices", "20 * * * *", 30, "%Y-%m-%dT%H",
         "grant.expiring once per grant, expiry_notice_days (setting) before it expires."),
    _job(cleanup_idempotency, "Idempotency cleanup", "45 3 * * *", 360, "%Y-%m-%d",
         "Delete stored API replies (Idempotency-Key records) past their 24 h retention."),
    _job(deliver_webhooks, "Outbound webhooks", "*/5 * * * * *", 1, "%Y-%m-%dT%H:%M:%S",
         "Send new events to the product's webhook endpoints and retry failed deliveries."),
    _job(process_auto_topups, "Auto top-up charges", "*/5 * * * * *", 1, "%Y-%m-%dT%H:%M:%S",
         "Charge the saved Stripe card of each auto top-up due (off-session, one idempotency "
         "key per threshold crossing) and grant the package when paid."),
]}

# The task runner's loops (services/tasks/runner): every 5 s and every 30 s, same leader rule.
JOBS.update({j.name: j for j in RUNNER_JOBS})


def spec(name: str) -> JobSpec:
    name = name.replace("-", "_")
    if name not in JOBS:
        raise KeyError(f"Unknown job {name!r}; one of {', '.join(JOBS)}")
    return JOBS[name]


def run(name: str, *, period: str | None = None, trigger: str = "schedule"):
    """Run a job now in this thread (claim + execute); a claimed period is a no-op."""
    js = spec(name)
    return js.run(period=period or js.manual_period(utcnow()), trigger=trigger)


def start(app: Flask, name: str, *, period: str | None = None, trigger: str = "manual",
          staff=None, ip: str | None = None) -> jobruns.Claim:
    """Claim now, execute in a background thread: "run now" answers at once with the run id."""
    js = spec(name)
    if js.name == "distribute_credits":
        from services.jobs import distribution
        period = distribution.check_period(period)
    claim = jobruns.claim(job=js.name, period=period or js.manual_period(utcnow()), trigger=trigger)
    if staff is not None:
        with atomic():
            audit.record(action="jobs.run", staff=staff, target_type="job_run",
                         target_id=claim.run.id, ip=ip,
                         after={"job": js.name, "period": claim.run.period,
                                "started": claim.acquired, "status": claim.run.status})
    if claim.acquired:
        threading.Thread(target=_execute, args=(app, js, claim.run_id, claim.resumed),
                         name=f"job-{js.name}-{claim.run_id}", daemon=True).start()
    return claim


def retry(app: Flask, run_id: int, *, staff=None, ip: str | None = None) -> jobruns.Claim:
    """Retry a partial distribution run now (its customers still without their grant), audited;
    executed in a background thread like "run now"."""
    r = jobruns.get(run_id)
    if r is None:
        raise NotFound("No such run.")
    if r.job != "distribute_credits" or r.status != "partial":
        raise Conflict(f"Run {r.id} is {r.status}: only a partial distribution run is retried.")
    before = {"status": r.status, "error_count": r.error_count,
              "processed_count": r.processed_count}
    claim = jobruns.claim(job=r.job, period=r.period, trigger="manual")
    with atomic():
        audit.record(action="jobs.retry", staff=staff, target_type="job_run", target_id=r.id,
                     ip=ip, before=before, after={"job": r.job, "period": r.period,
                                                  "started": claim.acquired,
                                                  "status": claim.run.status})
    if claim.acquired:
        threading.Thread(target=_execute, args=(app, spec(r.job), claim.run_id, claim.resumed),
                         name=f"job-{r.job}-{claim.run_id}-retry", daemon=True).start()
    return claim


def _execute(app: Flask, js: JobSpec, run_id: int, resumed: bool) -> None:
    with app.app_context():
        try:
            js.execute(run_id, resumed)
        except Exception:
            log.exception("job.background_failed", extra={"job": js.name, "job_run_id": run_id})
        finally:
            from models import db
            db.session.remove()
