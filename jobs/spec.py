"""What a scheduled job is: its name, default schedule, misfire grace, period key and functions."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from models import JobRun
from services.jobs import runs as jobruns


@dataclass(frozen=True)
class JobSpec:
    name: str
    title: str
    description: str
    cron: str  # default schedule, crontab (5 fields) or with seconds first (6 fields)
    misfire_minutes: int  # default grace after a missed fire time
    period_format: str  # strftime of the period key a scheduled run claims
    run: Callable = field(compare=False, repr=False)  # run(*, period, trigger) -> JobRun | None
    execute: Callable = field(compare=False, repr=False)  # execute(run_id, resumed) -> JobRun

    def period(self, at: datetime) -> str:
        return at.strftime(self.period_format)

    def manual_period(self, at: datetime) -> str:
        """The period of a run started by hand. Distribution: the month (exactly once per month);
        the others: a key of their own, since their effects are exactly once per grant/task anyway."""
        if self.name == "distribute_credits":
            return self.period(at)
        return at.strftime("%Y-%m-%dT%H:%M:%S") + "m"


def guarded_job(name: str, body: Callable[[int], dict]) -> tuple[Callable, Callable]:
    """A job module's (run, execute): run claims (name, period) once, execute runs body(run_id)
    under services.jobs.runs.guarded (logged, failed on error, finished with its counts)."""

    def execute(run_id: int, resumed: bool = False) -> JobRun:
        return jobruns.guarded(name, run_id, lambda: body(run_id))

    def run(*, period: str, trigger: str = "schedule") -> JobRun:
        return jobruns.run(job=name, period=period, trigger=trigger, execute=execute)[0]

    return run, execute
