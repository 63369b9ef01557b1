"""cleanup_idempotency: daily; delete stored API replies past their 24 h retention.

Harmless if it never runs (an expired record is reused by the next claim of its key), but
without it the table only grows.
"""
from __future__ import annotations

from models import JobRun
from services.jobs import runs as jobruns
from services.ledger import idempotency

JOB = "cleanup_idempotency"


def run(*, period: str, trigger: str = "schedule") -> JobRun:
    return jobruns.run(job=JOB, period=period, trigger=trigger, execute=execute)[0]


def execute(run_id: int, resumed: bool = False) -> JobRun:
    def body():
        removed = idempotency.cleanup()
        return dict(processed_count=removed, details={"removed": removed})

    return jobruns.guarded(JOB, run_id, body)
