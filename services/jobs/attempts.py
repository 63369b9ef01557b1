"""The attempts of a run and the state of its per-customer errors (distribution).

A run of a period is one job_runs row; each time it is carried out (the first run, the resume of
a crashed or failed attempt, the retry of a `partial` one) appends an attempt record to
`job_runs.details["attempts"]` and moves `details["attempt_floor"]` to the highest
job_run_errors id written before that attempt. Errors above the floor belong to the latest
attempt: their customers are still failing; a customer whose errors are all below it was fixed
by a later attempt. No column of its own: the errors table and the details JSON say it all.
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select, update

from models import JobRun, JobRunError, db, utcnow
from services.core.db import atomic

EXPIRY_PREFIX = "expiry: "  # how the expiry pass's failures are told apart in job_run_errors


@dataclass(frozen=True)
class Attempt:
    no: int
    kind: str  # run | resume | retry
    floor: int  # errors with a higher id are this attempt's


def _iso(t) -> str:
    return t.replace(microsecond=0).isoformat() + "Z"


def begin(*, run_id: int, resumed: bool) -> Attempt:
    """Record that an attempt starts: its kind, number and error floor; reset the live error count."""
    with atomic() as s:
        r = s.scalar(select(JobRun).where(JobRun.id == run_id)
                     .execution_options(populate_existing=True))
        details = dict(r.details or {})
        history = list(details.get("attempts") or [])
        last = history[-1]["status"] if history else None
        kind = "retry" if last == "partial" else ("resume" if resumed else "run")
        floor = int(s.scalar(select(func.coalesce(func.max(JobRunError.id), 0))
                             .where(JobRunError.run_id == run_id)))
        attempt = Attempt(no=len(history) + 1, kind=kind, floor=floor)
        history.append({"attempt": attempt.no, "kind": kind, "trigger": r.trigger,
                        "started_at": _iso(utcnow()), "status": "running"})
        details.update(attempts=history, attempt_floor=floor)
        s.execute(update(JobRun).where(JobRun.id == run_id)
                  .values(details=details, error_count=0)
                  .execution_options(synchronize_session=False))
    db.session.expire_all()
    return attempt


def close(details: dict | None, **outcome) -> dict:
    """The run's details with its latest attempt closed: finish time and outcome."""
    details = dict(details or {})
    history = [dict(a) for a in details.get("attempts") or []]
    if history:
        history[-1].update(finished_at=_iso(utcnow()), **outcome)
    details["attempts"] = history
    return details


def failing(*, run_id: int, floor: int) -> tuple[set[int], set[int]]:
    """Customers of the latest attempt's errors: (grant failures, expiry failures)."""
    rows = db.session.execute(select(JobRunError.customer_id, JobRunError.error)
                              .where(JobRunError.run_id == run_id, JobRunError.id > floor)).all()
    grants = {c for c, e in rows if c is not None and not e.startswith(EXPIRY_PREFIX)}
    expiry = {c for c, e in rows if c is not None and e.startswith(EXPIRY_PREFIX)}
    return grants, expiry


def earlier(*, run_id: int, floor: int) -> set[int]:
    """Customers with errors in the attempts before the latest one."""
    return set(db.session.scalars(select(JobRunError.customer_id).distinct().where(
        JobRunError.run_id == run_id, JobRunError.id <= floor,
        JobRunError.customer_id.is_not(None))))


def error_states(run: JobRun, errors: list[JobRunError]) -> dict[int, str]:
    """For the run page: each error row's state, "failing" (the latest attempt failed for that
    customer), "fixed" (a later attempt succeeded for them) or "retrying" (an attempt runs now)."""
    floor = int((run.details or {}).get("attempt_floor") or 0)
    ids = {e.customer_id for e in errors if e.customer_id is not None and e.id <= floor}
    again = set(db.session.scalars(select(JobRunError.customer_id).distinct().where(
        JobRunError.run_id == run.id, JobRunError.id > floor,
        JobRunError.customer_id.in_(ids)))) if ids else set()
    states = {}
    for e in errors:
        if e.id > floor or e.customer_id in again:
            states[e.id] = "failing"
        elif run.status == "running":
            states[e.id] = "retrying"
        else:
            states[e.id] = "fixed"
    return states


def kind_of(error: JobRunError) -> str:
    return "expiry" if error.error.startswith(EXPIRY_PREFIX) else "grant"
