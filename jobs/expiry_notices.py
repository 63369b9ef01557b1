"""expiry_notices: hourly; grant.expiring once per grant `expiry_notice_days` before it expires.

Exactly once per grant whatever the runs (services/ledger/expiry_notices.py marks each grant in
the transaction that writes its event), so a missed or doubled run is harmless.
"""
from __future__ import annotations

from jobs.spec import guarded_job
from services.ledger import expiry_notices

JOB = "expiry_notices"


def _notify(run_id: int) -> dict:
    res = expiry_notices.run_pass()
    return dict(processed_count=res.grants, details={"grants": res.grants, "credits": res.credits})


run, execute = guarded_job(JOB, _notify)
