"""expire_credits: hourly; one expiry entry per due grant (services/expiry.py)."""
from __future__ import annotations

from jobs.spec import guarded_job
from models import utcnow
from services.core.db import atomic
from services.jobs import runs as jobruns
from services.ledger import expiry
from services.ledger.rules import Actor

JOB = "expire_credits"


def _expire(run_id: int) -> dict:
    def beat(_grants, _credits):
        with atomic() as s:
            jobruns.heartbeat(s, run_id)

    res = expiry.run_pass(now=utcnow(), actor=Actor("job", JOB), job_run_id=run_id,
                          on_chunk=beat)
    for cid, error in res.errors:
        jobruns.record_error(run_id=run_id, customer_id=cid, error=error)
    return dict(users_count=res.accounts, processed_count=res.grants,
                details={"grants": res.grants, "credits": res.credits, "accounts": res.accounts})


run, execute = guarded_job(JOB, _expire)
