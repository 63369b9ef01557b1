"""recover_timeouts: every minute; overdue tasks -> timed_out + full refund (services/tasks.py)."""
from __future__ import annotations

from jobs.spec import guarded_job
from services.jobs import runs as jobruns
from services.ledger.rules import Actor
from services.tasks import prepaid as tasks

JOB = "recover_timeouts"


def _recover(run_id: int) -> dict:
    def failed(task_id: int, customer_id: int, err: Exception) -> None:
        jobruns.record_error(run_id=run_id, customer_id=customer_id,
                             error=f"task {task_id}: {type(err).__name__}: {err}")

    n = tasks.recover_overdue(actor=Actor("job", JOB), on_error=failed)
    return dict(users_count=n, processed_count=n, details={"timed_out": n})


run, execute = guarded_job(JOB, _recover)
