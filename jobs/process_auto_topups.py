"""process_auto_topups: every 5 s; charge the saved card of each auto top-up attempt due
(services/payments/autotopup_charge.py). Also `flask --app wsgi run-job process-auto-topups`.

Like the task runner's loops, a scheduled tick with nothing due records no job run; a tick that
worked, and every run by hand, records one. The charges are safe to run concurrently anyway
(SKIP LOCKED claim, conditional status update, Stripe idempotency key per crossing).
"""
from __future__ import annotations

from datetime import timedelta

from models import JobRun, utcnow
from services.jobs import runs as jobruns
from services.payments import autotopup_charge

JOB = "process_auto_topups"
KEEP_EMPTY_RUNS = timedelta(days=7)


def execute(run_id: int, resumed: bool = False) -> JobRun:
    def body() -> dict:
        out = autotopup_charge.process_due()
        for err in out.errors[:50]:
            jobruns.record_error(run_id=run_id, customer_id=None, error=err)
        jobruns.prune(job=JOB, older_than=utcnow() - KEEP_EMPTY_RUNS)
        return dict(users_count=out.claimed, processed_count=out.succeeded, details=out.as_dict())

    return jobruns.guarded(JOB, run_id, body)


def run(*, period: str, trigger: str = "schedule") -> JobRun | None:
    if trigger == "schedule" and not autotopup_charge.has_work():
        return None
    return jobruns.run(job=JOB, period=period, trigger=trigger, execute=execute)[0]
