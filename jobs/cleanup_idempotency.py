"""cleanup_idempotency: daily; delete stored API replies past their 24 h retention.

Harmless if it never runs (an expired record is reused by the next claim of its key), but
without it the table only grows.
"""
from __future__ import annotations

from jobs.spec import guarded_job
from services.ledger import idempotency

JOB = "cleanup_idempotency"


def _cleanup(run_id: int) -> dict:
    removed = idempotency.cleanup()
    return dict(processed_count=removed, details={"removed": removed})


run, execute = guarded_job(JOB, _cleanup)
