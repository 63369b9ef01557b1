"""distribute_credits: monthly, the 1st at 00:05 UTC by default (services/distribution.py)."""
from __future__ import annotations

from models import JobRun
from services.jobs import distribution
from services.jobs import runs as jobruns


def run(*, period: str | None = None, trigger: str = "schedule") -> JobRun:
    result = distribution.run(period=period, trigger=trigger)
    return jobruns.get(result.run_id)


def execute(run_id: int, resumed: bool = False) -> JobRun:
    distribution.execute(run_id=run_id, resumed=resumed)
    return jobruns.get(run_id)
