"""expire_credits: hourly; one expiry entry per due grant (services/expiry.py)."""
from __future__ import annotations

from models import JobRun, utcnow
from services.core.db import atomic
from services.jobs import runs as jobruns
from services.ledger import expiry
from services.ledger.rules import Actor

JOB = "expire_credits"


def run(*, period: str, trigger: str = "schedule") -> JobRun:
    return jobruns.run(job=JOB, period=period, trigger=trigger, execute=execute)[0]


def execute(run_id: int, resumed: bool = False) -> JobRun:
    def body():
        def beat(_grants, _credits):
            with atomic() as s:
                jobruns.heartbeat(s, run_id)

        res = expiry.run_pass(now=utcnow(), actor=Actor("job", JOB), job_run_id=run_id,
                              on_chunk=beat)
        for cid, error in res.errors:
            jobruns.record_error(run_id=run_id, customer_id=cid, error=error)
        return dict(users_count=res.accounts, processed_count=res.grants,
                    details={"grants": res.grants, "credits": res.credits, "accounts": res.accounts})

    return jobruns.guarded(JOB, run_id, body)
