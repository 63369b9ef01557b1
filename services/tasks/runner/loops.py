"""The two loops of seed 003, run as scheduled jobs (jobs/runner_jobs.py) or by hand.

Main loop (`run_main`, in AI_RUNNER_CONCURRENCY threads): claim pending tasks of the active
types, by priority (higher first) then age: PostgreSQL locks them with FOR UPDATE SKIP LOCKED so
concurrent workers take different rows, SQLite serialises the claim with BEGIN IMMEDIATE; each
moves pending ->
processing with a conditional update (services.tasks.prepaid.start). No lock is held while a provider
works. A sync task runs now and is settled by its handler; an async one is submitted and its
external id stored. A retryable failure of one endpoint tries the next (fallback); when every
endpoint failed retryably the task goes back to pending with next_attempt_at = now + backoff
(base x 2^(attempt-1), capped) until AI_TASK_MAX_ATTEMPTS, then it fails with a full refund.

Async query loop (`run_query`): lease due processing async tasks (next_attempt_at = now + lease,
under the same locking, so two pollers do not ask twice), ask the endpoint that took each job,
settle on success, refund on failure (or resubmit a retryable failure while attempts remain).

Settlement is exactly once: services.tasks.prepaid settles with a conditional status update, so a task
cancelled, timed out or settled by someone else meanwhile answers TaskAlreadyFinished, counted
here as `skipped`.
"""
from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import or_, select, update
from sqlalchemy.exc import DBAPIError

from models import LedgerEntry, Task, db, utcnow
from services.core import context
from services.core.db import atomic, is_sqlite
from services.core.errors import TaskAlreadyFinished
from services.tasks import prepaid as tasks
from services.tasks.runner import registry
from services.tasks.runner.handlers import RUNNER
from services.tasks.runner.providers import AsyncProvider, ProviderError, SyncProvider, endpoints

log = logging.getLogger("creditdesk.runner")


@dataclass(frozen=True, kw_only=True)
class Settings:
    """The runner's knobs, read from the app config by settings() (defaults: dashboard/config.py)."""

    max_attempts: int
    retry_base: float
    retry_max: float
    batch: int
    max_per_run: int
    poll_lease: float
    concurrency: int

    def backoff(self, attempt: int) -> float:
        return min(self.retry_max, self.retry_base * 2 ** max(attempt - 1, 0))


def settings() -> Settings:
    c = current_app.config
    return Settings(max_attempts=int(c.get("AI_TASK_MAX_ATTEMPTS", 3)),
                    retry_base=float(c.get("AI_RETRY_BASE_SECONDS", 10)),
                    retry_max=float(c.get("AI_RETRY_MAX_SECONDS", 600)),
                    batch=max(int(c.get("AI_RUNNER_BATCH", 10)), 1),
                    max_per_run=max(int(c.get("AI_RUNNER_MAX_TASKS_PER_RUN", 500)), 1),
                    poll_lease=float(c.get("AI_POLL_LEASE_SECONDS", 25)),
                    concurrency=int(c.get("AI_RUNNER_CONCURRENCY", 4)))


@dataclass
class LoopResult:
    claimed: int = 0
    succeeded: int = 0
    submitted: int = 0
    retried: int = 0
    failed: int = 0
    running: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)

    @classmethod
    def merge(cls, parts: list[LoopResult]) -> LoopResult:
        out = cls()
        for p in parts:
            for k in ("claimed", "succeeded", "submitted", "retried", "failed", "running", "skipped"):
                setattr(out, k, getattr(out, k) + getattr(p, k))
            out.errors += p.errors
        return out

    @property
    def processed(self) -> int:
        return self.succeeded + self.submitted + self.retried + self.failed

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("claimed", "succeeded", "submitted", "retried",
                                              "failed", "running", "skipped")}


def _of_types(types: list[str]):
    return or_(Task.type.in_(types), *[Task.type.startswith(f"{t}:", autoescape=True) for t in types])


def _pending(types: list[str], now: datetime):
    return (select(Task.id).where(Task.status == "pending", _of_types(types), Task.deadline_at > now,
                                  or_(Task.next_attempt_at.is_(None), Task.next_attempt_at <= now)))


def _polls_due(types: list[str], now: datetime):
    return (select(Task.id).where(Task.status == "processing", Task.mode == "async",
                                  Task.external_task_id.is_not(None), _of_types(types),
                                  or_(Task.next_attempt_at.is_(None), Task.next_attempt_at <= now)))


def has_work(kind: str = "main") -> bool:
    """Whether a loop has anything due now (a scheduled tick with nothing to do records no run)."""
    types = registry.active_types()
    if not types:
        return False
    q = _pending(types, utcnow()) if kind == "main" else _polls_due(types, utcnow())
    found = db.session.scalar(q.limit(1)) is not None
    db.session.rollback()
    return found


def _note(task_id: int, message: str, *, level: str = "info", data: dict | None = None) -> None:
    with atomic() as s:
        tasks.log(s, task_id, message, level=level, data=data)


# --- main loop ---------------------------------------------------------------------------------------

def claim(*, limit: int, now: datetime | None = None) -> list[int]:
    """Move up to `limit` due pending tasks to processing; the ids this caller won."""
    types = registry.active_types()
    if not types:
        return []
    first = endpoints()[0].name
    with atomic() as s:
        q = (_pending(types, now or utcnow())
             .order_by(Task.priority.desc(), Task.created_at, Task.id).limit(limit))
        if not is_sqlite(s):
            q = q.with_for_update(skip_locked=True)
        ids = list(s.scalars(q))
        return [i for i in ids if tasks.start(task_id=i, provider=first)]  # joins this transaction


def run_main(*, max_tasks: int | None = None, concurrency: int | None = None) -> LoopResult:
    """Claim and run due pending tasks until none is left (or max_tasks were claimed).

    With concurrency > 1 (AI_RUNNER_CONCURRENCY) that many threads, each with its own app
    context and session, claim and run tasks one at a time, so one slow provider call does not
    hold up the others.
    """
    cfg = settings()
    budget = _Budget(max_tasks or cfg.max_per_run)
    workers = max(concurrency or cfg.concurrency, 1)
    if workers == 1:
        return _drain(cfg, budget, cfg.batch)
    app = current_app._get_current_object()

    def work(_: int) -> LoopResult:
        with app.app_context():
            try:
                return _drain(cfg, budget, 1)
            finally:
                db.session.remove()

    with ThreadPoolExecutor(workers, thread_name_prefix="task-runner") as pool:
        return LoopResult.merge(list(pool.map(work, range(workers))))


class _Budget:
    """How many more tasks this run may claim, shared by its threads."""

    def __init__(self, left: int):
        self.left, self.lock = left, threading.Lock()

    def take(self, n: int) -> int:
        with self.lock:
            n = min(n, self.left)
            self.left -= n
            return n

    def give_back(self, n: int) -> None:
        with self.lock:
            self.left += n


def _drain(cfg: Settings, budget: _Budget, batch: int) -> LoopResult:
    out = LoopResult()
    while (want := budget.take(batch)) > 0:
        ids = claim(limit=want)
        budget.give_back(want - len(ids))
        if not ids:
            break
        out.claimed += len(ids)
        for task_id in ids:
            _guarded(task_id, out, cfg, _execute)
    return out


def _guarded(task_id: int, out: LoopResult, cfg: Settings, step) -> None:
    """One task's step; a bug in it must not stop the loop (nor leave the task charged)."""
    try:
        step(_fresh(task_id), out, cfg)
    except TaskAlreadyFinished:
        out.skipped += 1
    except DBAPIError as err:  # transient (deadlock, lost connection): leave the task as it is;
        db.session.rollback()  # polled again next round, or refunded by the timeout sweep
        log.warning("runner.task_db_error task_id=%s", task_id, exc_info=True)
        out.errors.append(f"task {task_id}: database: {type(err.orig).__name__}")
    except Exception as err:  # noqa: BLE001 - reported in the run, the task refunded
        db.session.rollback()
        log.exception("runner.task_failed task_id=%s", task_id)
        out.errors.append(f"task {task_id}: {type(err).__name__}: {err}")
        try:
            tasks.fail(task_id=task_id, error=f"internal error: {type(err).__name__}", actor=RUNNER)
            out.failed += 1
        except Exception:  # noqa: BLE001 - the timeout sweep refunds it later
            db.session.rollback()


def _fresh(task_id: int) -> Task:
    return db.session.scalar(select(Task).where(Task.id == task_id)
                             .execution_options(populate_existing=True))


def _origin(task: Task) -> str | None:
    """The request id of the API (or dashboard) request that charged this attempt: provider calls
    carry it as X-Request-Id, so the provider's logs lead back to the request that asked."""
    if task.charge_entry_id is None:
        return None
    return db.session.scalar(select(LedgerEntry.request_id)
                             .where(LedgerEntry.id == task.charge_entry_id))


def _execute(task: Task, out: LoopResult, cfg: Settings) -> None:
    kind = registry.lookup(task.type)
    chain = kind.chain(task.mode) if kind else []
    if not chain:
        tasks.fail(task_id=task.id, error=f"{task.type} tasks do not run in {task.mode} mode",
                   actor=RUNNER)
        out.failed += 1
        return
    request_id, origin = f"creditdesk-task-{task.id}-{task.attempts}", _origin(task)
    failures: list[ProviderError] = []
    for provider in chain:
        try:
            with context.request_scope(origin):
                if isinstance(provider, SyncProvider):
                    result = provider.run(task.input or {}, request_id=request_id)
                else:
                    external_id = provider.submit(task.input or {}, request_id=request_id)
        except ProviderError as err:
            err.provider = err.provider or provider.name
            failures.append(err)
            log.warning("runner.provider_failed task_id=%s provider=%s retryable=%s: %s", task.id,
                        provider.name, err.retryable, err.message,
                        extra={"task_id": task.id, "provider": provider.name, "status": err.status})
            _note(task.id, f"{provider.name} failed: {err.message}", level="warning",
                  data={"provider": provider.name, "status": err.status, "retryable": err.retryable,
                        "attempt": task.attempts})
            if not err.retryable:
                break
            continue
        if failures:
            _note(task.id, f"fallback: {provider.name} took over from "
                  f"{', '.join(f.provider for f in failures)}", data={"provider": provider.name})
        if isinstance(provider, SyncProvider):
            kind.handler.succeed(task, result)
            out.succeeded += 1
        else:
            _submitted(task, provider.name, external_id)
            out.submitted += 1
        return
    _give_up_or_retry(task, kind, failures[-1], out, cfg)


def _give_up_or_retry(task: Task, kind: registry.TaskType, err: ProviderError, out: LoopResult,
                      cfg: Settings) -> None:
    if err.retryable and task.attempts < cfg.max_attempts:
        _reschedule(task, cfg.backoff(task.attempts), str(err), cfg)
        out.retried += 1
        return
    why = "not retryable" if not err.retryable else f"after {task.attempts} attempt(s)"
    kind.handler.fail(task, f"{err} ({why})")
    out.failed += 1


def _reschedule(task: Task, delay: float, error: str, cfg: Settings) -> None:
    """processing -> pending, due again after `delay` seconds (conditional, like every move)."""
    now = utcnow()
    with atomic() as s:
        done = s.execute(update(Task).where(Task.id == task.id, Task.status == "processing")
                         .values(status="pending", next_attempt_at=now + timedelta(seconds=delay),
                                 external_task_id=None, updated_at=now, error=error[:2000])
                         .execution_options(synchronize_session=False)).rowcount
        if done != 1:
            raise TaskAlreadyFinished(f"Task {task.id} is no longer processing.")
        tasks.log(s, task.id, f"attempt {task.attempts} of {cfg.max_attempts} failed; retry in "
                  f"{delay:g} s", level="warning", data={"error": error[:500], "delay": delay})


def _submitted(task: Task, provider: str, external_id: str) -> None:
    with atomic() as s:
        done = s.execute(update(Task).where(Task.id == task.id, Task.status == "processing",
                                            Task.external_task_id.is_(None))
                         .values(provider=provider, external_task_id=external_id,
                                 next_attempt_at=None, updated_at=utcnow())
                         .execution_options(synchronize_session=False)).rowcount
        if done == 1:
            tasks.log(s, task.id, f"submitted to {provider} as {external_id}",
                      data={"provider": provider, "external_task_id": external_id})
        else:  # cancelled or timed out while we submitted: nobody will collect this job
            tasks.log(s, task.id, f"{provider} job {external_id} orphaned: the task finished "
                      "while it was submitted", level="warning")
            raise TaskAlreadyFinished(f"Task {task.id} is no longer processing.")


# --- async query loop ----------------------------------------------------------------------------

def lease_polls(*, limit: int, lease: float, now: datetime | None = None) -> list[int]:
    """Take up to `limit` due async tasks for polling; they are not due again for `lease` s."""
    types = registry.active_types()
    if not types:
        return []
    now = now or utcnow()
    with atomic() as s:
        q = _polls_due(types, now).order_by(Task.next_attempt_at, Task.id).limit(limit)
        if not is_sqlite(s):
            q = q.with_for_update(skip_locked=True)
        ids = list(s.scalars(q))
        if ids:
            s.execute(update(Task).where(Task.id.in_(ids), Task.status == "processing")
                      .values(next_attempt_at=now + timedelta(seconds=lease))
                      .execution_options(synchronize_session=False))
        return ids


def run_query(*, max_tasks: int | None = None) -> LoopResult:
    """Poll every due async task once."""
    cfg, out = settings(), LoopResult()
    limit = max_tasks or cfg.max_per_run
    while out.claimed < limit:
        ids = lease_polls(limit=min(cfg.batch * 5, limit - out.claimed), lease=cfg.poll_lease)
        if not ids:
            break
        out.claimed += len(ids)
        for task_id in ids:
            _guarded(task_id, out, cfg, _poll)
        if cfg.poll_lease <= 0:
            break  # without a lease the same tasks are due again at once: one pass per run
    return out


def _poll(task: Task, out: LoopResult, cfg: Settings) -> None:
    if task.status != "processing" or not task.external_task_id:
        out.skipped += 1
        return
    kind = registry.lookup(task.type)
    provider = kind.provider_named("async", task.provider) if kind else None
    if not isinstance(provider, AsyncProvider):
        _note(task.id, f"cannot poll: provider {task.provider!r} is not configured", level="error")
        out.errors.append(f"task {task.id}: provider {task.provider!r} not configured")
        return
    try:
        with context.request_scope(_origin(task)):
            poll = provider.query(task.external_task_id,
                                  request_id=f"creditdesk-task-{task.id}-{task.attempts}")
    except ProviderError as err:
        if err.retryable:  # the job may be fine; ask again next time
            _note(task.id, f"poll of {provider.name} failed: {err.message}", level="warning",
                  data={"status": err.status})
            out.running += 1
            return
        kind.handler.fail(task, f"{err} (job {task.external_task_id} unknown)")
        out.failed += 1
        return
    if poll.status == "running":
        out.running += 1
    elif poll.status == "succeeded":
        kind.handler.succeed(task, poll.result)
        out.succeeded += 1
    else:
        _note(task.id, f"{provider.name} job {task.external_task_id} failed: {poll.error.message}",
              level="warning", data={"retryable": poll.error.retryable})
        _give_up_or_retry(task, kind, poll.error, out, cfg)
