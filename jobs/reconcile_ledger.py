"""reconcile_ledger: nightly; the ledger checks, stored in the run's details for the overview.

It also prunes runs of the frequent jobs that did nothing, older than a week, so that a minute job
does not leave half a million empty rows a year.
"""
from __future__ import annotations

from datetime import timedelta

from jobs.spec import guarded_job
from models import utcnow
from services.jobs import runs as jobruns
from services.ledger import reconcile

JOB = "reconcile_ledger"
KEEP_EMPTY_RUNS = timedelta(days=7)


def _reconcile(run_id: int) -> dict:
    report = reconcile.run()
    pruned = sum(jobruns.prune(job=j, older_than=utcnow() - KEEP_EMPTY_RUNS)
                 for j in ("recover_timeouts", "expire_credits"))
    details = report.as_dict()
    details["pruned_runs"] = pruned
    return dict(users_count=report.accounts, processed_count=report.entries,
                error_count=report.violations, details=details)


run, execute = guarded_job(JOB, _reconcile)
