"""recover_timeouts: every minute; overdue tasks -> timed_out + full refund (services/tasks.py)."""
from __future__ import annotations

from models import JobRun
from services.jobs import runs as jobruns
from services.ledger.rules import Actor
from services.tasks import prepaid as tasks

JOB = "recover_timeouts"


def run(*, period: str, trigger: str = "schedule") -> JobRun:
    return jobruns.run(job=JOB, period=period, trigger=trigger, execute=execute)[0]


def execute(run_id: int, resumed: bool = False) -> JobRun:
    def body():
        def failed(task_id: int, customer_id: int, err: Exception) -> None:
            jobruns.record_error(run_id=run_id, customer_id=customer_id,
                                 error=f"task {task_id}: {type(err).__name__}: {err}")

        n = tasks.recover_overdue(actor=Actor("job", JOB), on_error=failed)
        return dict(users_count=n, processed_count=n, details={"timed_out": n})

    return jobruns.guarded(JOB, run_id, body)
