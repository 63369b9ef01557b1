"""deliver_webhooks: every 5 s; the outbox to the product's endpoints (services/events/delivery.py).

Like the task runner's loops, a scheduled tick with nothing to dispatch or send records no job
run; a tick that worked (and every run by hand: `flask deliver-webhooks`, `flask run-job
deliver_webhooks`, the jobs page) records one with its counts.
"""
from __future__ import annotations

from datetime import timedelta

from models import JobRun, utcnow
from services.events import delivery
from services.jobs import runs as jobruns

JOB = "deliver_webhooks"
KEEP_EMPTY_RUNS = timedelta(days=7)


def _body(run_id: int) -> dict:
    out = delivery.run()
    for err in out.errors[:50]:
        jobruns.record_error(run_id=run_id, customer_id=None, error=err)
    jobruns.prune(job=JOB, older_than=utcnow() - KEEP_EMPTY_RUNS)
    return dict(users_count=out.attempted, processed_count=out.dispatched + out.attempted,
                details=out.as_dict())


def execute(run_id: int, resumed: bool = False) -> JobRun:
    return jobruns.guarded(JOB, run_id, lambda: _body(run_id))


def run(*, period: str, trigger: str = "schedule") -> JobRun | None:
    if trigger == "schedule" and not delivery.has_work():
        return None
    return jobruns.run(job=JOB, period=period, trigger=trigger, execute=execute)[0]
