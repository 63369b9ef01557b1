"""rollup_ledger: hourly; recompute the ledger_daily rollups of complete days (services/ledger_rollup.py).

Idempotent: a run recomputes whole days from the ledger, so running it twice, late, or after a
failure gives the same table. The analytics page is correct without it (later days are read
live); the rollups only make long ranges fast.
"""
from __future__ import annotations

from jobs.spec import guarded_job
from services.ledger import rollup as ledger_rollup

JOB = "rollup_ledger"


def _rollup(run_id: int) -> dict:
    res = ledger_rollup.refresh()
    return dict(processed_count=res.days,
                details={"days": res.days, "rows": res.rows,
                         "rolled_through": res.rolled_through.isoformat()
                         if res.rolled_through else None})


run, execute = guarded_job(JOB, _rollup)
