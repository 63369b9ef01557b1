"""The task runner's two loops as scheduled jobs (services/runner/loops.py, docs/tasks.md).

- run_tasks (every 5 s): claim pending tasks, run sync ones, submit async ones.
- poll_tasks (every 30 s): poll processing async tasks, settle or refund.

They run under the scheduler's leader rule like every job (one active scheduler across workers
and replicas). A scheduled tick with nothing due records no job run (17,280 empty rows a day
otherwise); a tick that worked records one, and the run's counts say what it did. Runs by hand
(`flask run-job run_tasks`, the jobs page) are always recorded. Each job is exactly once per
period like the others, and the loops themselves are safe to run concurrently anyway (SKIP
LOCKED claims, conditional status updates).
"""
from __future__ import annotations

from datetime import timedelta

from jobs.spec import JobSpec
from models import JobRun, utcnow
from services.jobs import runs as jobruns
from services.tasks.runner import loops

KEEP_EMPTY_RUNS = timedelta(days=7)


class LoopJob:
    """A job whose body is one pass of a runner loop; its run/execute go into a JobSpec."""

    def __init__(self, name: str, kind: str, body):
        self.name, self.kind, self.body = name, kind, body

    def run(self, *, period: str, trigger: str = "schedule") -> JobRun | None:
        if trigger == "schedule" and not loops.has_work(self.kind):
            return None
        return jobruns.run(job=self.name, period=period, trigger=trigger, execute=self.execute)[0]

    def execute(self, run_id: int, resumed: bool = False) -> JobRun:
        def body():
            out = self.body()
            for err in out.errors[:50]:
                jobruns.record_error(run_id=run_id, customer_id=None, error=err)
            jobruns.prune(job=self.name, older_than=utcnow() - KEEP_EMPTY_RUNS)
            return dict(users_count=out.claimed, processed_count=out.processed,
                        details=out.as_dict())

        return jobruns.guarded(self.name, run_id, body)


def _loop(name: str, title: str, description: str, cron: str, misfire: int, period: str,
          job: LoopJob) -> JobSpec:
    return JobSpec(name, title, description, cron, misfire, period, run=job.run, execute=job.execute)


RUNNER_JOBS = [
    _loop("run_tasks", "Task runner: main loop",
          "Claim pending AI tasks (priority, then age), run sync ones, submit async ones; "
          "retries with backoff, fallback provider.",
          "*/5 * * * * *", 1, "%Y-%m-%dT%H:%M:%S", LoopJob("run_tasks", "main", loops.run_main)),
    _loop("poll_tasks", "Task runner: async query loop",
          "Poll the provider jobs of processing async tasks; settle on success, refund on "
          "failure.",
          "*/30 * * * * *", 2, "%Y-%m-%dT%H:%M:%S", LoopJob("poll_tasks", "query", loops.run_query)),
]
