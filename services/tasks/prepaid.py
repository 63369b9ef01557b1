"""Prepaid tasks (seed 003): charge the estimate up front, settle exactly once.

Settlement is guarded by a conditional status update (WHERE id = ? AND status IN open), so a
task is completed, failed, cancelled or timed out once, whoever gets there first. Locks are
taken task row first, then account, everywhere, so sweepers and completions cannot deadlock.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update

from models import LedgerEntry, Task, TaskLog, db, utcnow
from services.catalog import pricing
from services.core import audit
from services.core.db import atomic, is_sqlite
from services.core.errors import Conflict, TaskAlreadyFinished, TaskNotFound, ValidationFailed
from services.events import outbox
from services.ledger import posting as ledger
from services.ledger import rules
from services.ledger.rules import SYSTEM, Actor

OPEN = ("pending", "processing")
DEFAULT_TIMEOUT = 600
MAX_TIMEOUT = 7 * 24 * 3600


def get(task_id: int) -> Task:
    task = db.session.get(Task, task_id)
    if task is None:
        raise TaskNotFound(f"Task {task_id} not found.")
    return task


def log(s, task_id: int, message: str, *, level: str = "info", data: dict | None = None) -> None:
    s.add(TaskLog(task_id=task_id, level=level, message=message, data=data))


def create(*, type: str, customer_id: int | None = None, external_id: str | None = None,
           mode: str = "sync", estimated_credits: int | None = None, input: dict | None = None,
           timeout_seconds: int | None = None, priority: int = 0, key: str | None = None,
           actor: Actor = SYSTEM) -> Task:
    """Create a task and charge its estimate (from feature pricing unless given)."""
    if mode not in ("sync", "async"):
        raise ValidationFailed("mode must be sync or async", details={"mode": "invalid"})
    timeout = DEFAULT_TIMEOUT if timeout_seconds is None else timeout_seconds
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not 1 <= timeout <= MAX_TIMEOUT:
        raise ValidationFailed(f"timeout_seconds must be between 1 and {MAX_TIMEOUT}",
                               details={"timeout_seconds": "out of range"})
    estimate = estimated_credits if estimated_credits is not None \
        else pricing.credits_for(feature=type, quantity=1)
    rules.positive(estimate, "estimated_credits")
    charge_key = f"task-charge:{key}" if key else None
    h = rules.fingerprint("task", customer=customer_id or external_id, type=type, mode=mode,
                           estimate=estimate)
    with atomic() as s:
        if charge_key and (done := ledger.find_by_key(s, charge_key)):
            rules.check_replay(done, h)
            return s.get(Task, done.task_id)
        account = ledger.lock_account(s, customer_id=customer_id, external_id=external_id)
        now = utcnow()
        task = Task(customer_id=account.customer_id, type=type, mode=mode, status="pending",
                    priority=priority, estimated_credits=estimate, input=input,
                    deadline_at=now + timedelta(seconds=timeout), created_at=now, updated_at=now)
        s.add(task)
        s.flush()
        entry = ledger.post_debit(s, account, credits=estimate, feature=type, key=charge_key,
                                  request_hash=h, actor=actor, task_id=task.id,
                                  reason="task estimate charged", reference=f"task:{task.id}")
        task.charge_entry_id, task.charged_credits = entry.id, estimate
        log(s, task.id, "task created, estimate charged", data={"credits": estimate})
        return task


def _finish(task_id: int, *, status: str, refund: int | None, actor: Actor,
            actual: int | None = None, usage: int | None = None, output: dict | None = None,
            error: str | None = None, allowed: tuple[str, ...] = OPEN, message: str) -> Task:
    """Move an open task to a final status once, and refund `refund` credits (None = all)."""
    with atomic() as s:
        task = s.scalar(select(Task).where(Task.id == task_id).with_for_update()
                        .execution_options(populate_existing=True))
        if task is None:
            raise TaskNotFound(f"Task {task_id} not found.")
        account = ledger.lock_account(s, customer_id=task.customer_id)
        charged = task.charged_credits
        give = charged if refund is None else min(refund, charged)
        now = utcnow()
        done = s.execute(
            update(Task).where(Task.id == task_id, Task.status.in_(allowed))
            .values(status=status, finished_at=now, updated_at=now, refunded_credits=give,
                    actual_credits=actual if actual is not None else (0 if refund is None else None),
                    usage_credits=usage, output=output, error=error)
            .execution_options(synchronize_session=False)
        ).rowcount
        if done != 1:
            raise TaskAlreadyFinished(f"Task {task_id} is already {task.status}.")
        if give > 0:
            charge = s.get(LedgerEntry, task.charge_entry_id)
            ledger.post_return(s, account, charge, give, type="refund", actor=actor,
                               key=_settle_key(task_id, charge), request_hash=rules.fingerprint(
                                   "task-settle", task=task_id, credits=give),
                               reason=message, task_id=task_id)
        log(s, task_id, message, level="info" if status == "succeeded" else "warning",
            data={"refunded": give, "actual": actual, "usage": usage, "error": error})
        outbox.emit("task.finished", {
            "task_id": task_id, "type": task.type, "status": status, "charged_credits": charged,
            "refunded_credits": give, "actual_credits": charged - give,
            "usage_credits": usage, "error": error}, customer_id=task.customer_id, session=s)
    db.session.expire_all()
    return get(task_id)


def _settle_key(task_id: int, charge: LedgerEntry) -> str:
    """One settlement per charge: the first keeps `task:<id>:settle`; a retry's charge (keyed
    `task:<id>:retry:<n>`) gets a key of its own."""
    key = f"task:{task_id}:settle"
    if charge.idempotency_key and charge.idempotency_key.startswith(f"task:{task_id}:retry:"):
        key += f":{charge.id}"
    return key


def complete(*, task_id: int, actual_credits: int, output: dict | None = None,
             actor: Actor = SYSTEM) -> Task:
    """Settle: refund estimate - actual when actual is lower; never charge more than the estimate.
    The charge (actual_credits) is capped at what was charged; the usage (usage_credits) is kept
    as reported, so an estimate that was too low shows."""
    if isinstance(actual_credits, bool) or not isinstance(actual_credits, int) or actual_credits < 0:
        raise ValidationFailed("actual_credits must be a whole number >= 0",
                               details={"actual_credits": "invalid"})
    task = get(task_id)
    refund = max(task.charged_credits - actual_credits, 0)
    return _finish(task_id, status="succeeded", refund=refund, actor=actor,
                   actual=min(actual_credits, task.charged_credits), usage=actual_credits,
                   output=output, message="task completed" + (
                       f", {refund} credits refunded" if refund else "") + (
                       f"; usage {actual_credits} exceeded the charge, capped"
                       if actual_credits > task.charged_credits else ""))


def fail(*, task_id: int, error: str, actor: Actor = SYSTEM) -> Task:
    """The task failed: full refund."""
    return _finish(task_id, status="failed", refund=None, actor=actor, error=(error or "")[:2000],
                   message="task failed, estimate refunded")


def cancel(*, task_id: int, reason: str, actor: Actor = SYSTEM) -> Task:
    """Staff cancelled the task: full refund."""
    return _finish(task_id, status="cancelled", refund=None, actor=actor, error=reason,
                   message="task cancelled, estimate refunded")


def time_out(*, task_id: int, actor: Actor = SYSTEM) -> Task:
    """The task passed its deadline: full refund."""
    return _finish(task_id, status="timed_out", refund=None, actor=actor,
                   error="deadline passed", message="task timed out, estimate refunded")


def start(*, task_id: int, provider: str | None = None, external_task_id: str | None = None) -> bool:
    """pending -> processing (conditional); False when someone else moved it first."""
    with atomic() as s:
        done = s.execute(update(Task).where(Task.id == task_id, Task.status == "pending").values(
            status="processing", started_at=utcnow(), updated_at=utcnow(), provider=provider,
            external_task_id=external_task_id, attempts=Task.attempts + 1)).rowcount
        if done:
            log(s, task_id, "task started", data={"provider": provider})
        return bool(done)


def recover_overdue(*, now: datetime | None = None,
                    actor: Actor = Actor("job", "recover_timeouts"), on_error=None) -> int:
    """Time out and refund every overdue task, each exactly once; returns how many.

    A task that cannot be settled (its customer was deleted, say) is skipped for the rest of this
    sweep and reported through on_error(task_id, customer_id, error): it must not block the others.
    """
    done, skipped = 0, []
    while True:
        task_id = customer_id = None
        try:
            with atomic() as s:
                # One task per transaction; PostgreSQL skips rows another sweeper holds.
                q = (select(Task.id, Task.customer_id)
                     .where(Task.status.in_(OPEN), Task.deadline_at < (now or utcnow()))
                     .order_by(Task.deadline_at).limit(1))
                if skipped:
                    q = q.where(Task.id.not_in(skipped))
                if not is_sqlite():
                    q = q.with_for_update(skip_locked=True)
                row = s.execute(q).first()
                if row is None:
                    return done
                task_id, customer_id = row
                try:
                    time_out(task_id=task_id, actor=actor)  # joins this transaction
                    done += 1
                except TaskAlreadyFinished:
                    pass
        except Exception as err:
            if task_id is None:
                raise
            skipped.append(task_id)
            if on_error is not None:
                on_error(task_id, customer_id, err)


# --- staff actions from the dashboard (audited) -------------------------------------------------

RETRYABLE = ("failed", "timed_out", "cancelled")


def retry(*, task_id: int, actor: Actor = SYSTEM, staff=None, ip: str | None = None) -> Task:
    """Run a failed, timed-out or cancelled task again: its estimate is charged again through the
    ledger, it goes back to pending with a fresh deadline and attempts + 1."""
    with atomic() as s:
        task = s.scalar(select(Task).where(Task.id == task_id).with_for_update()
                        .execution_options(populate_existing=True))
        if task is None:
            raise TaskNotFound(f"Task {task_id} not found.")
        if task.status not in RETRYABLE:
            raise Conflict(f"Task {task_id} is {task.status}: only failed, timed-out or cancelled "
                           "tasks can be retried.")
        account = ledger.lock_account(s, customer_id=task.customer_id)
        before = {"status": task.status, "attempts": task.attempts,
                  "charged_credits": task.charged_credits, "refunded_credits": task.refunded_credits}
        attempt, estimate, now = task.attempts + 1, task.estimated_credits, utcnow()
        timeout = int((task.deadline_at - task.created_at).total_seconds())
        timeout = timeout if 1 <= timeout <= MAX_TIMEOUT else DEFAULT_TIMEOUT
        entry = ledger.post_debit(
            s, account, credits=estimate, feature=task.type, key=f"task:{task_id}:retry:{attempt}",
            request_hash=rules.fingerprint("task-retry", task=task_id, attempt=attempt,
                                            credits=estimate),
            actor=actor, task_id=task_id, reason="task retried, estimate charged again",
            reference=f"task:{task_id}")
        done = s.execute(
            update(Task).where(Task.id == task_id, Task.status.in_(RETRYABLE))
            .values(status="pending", attempts=attempt, charge_entry_id=entry.id,
                    charged_credits=estimate, refunded_credits=0, actual_credits=None,
                    usage_credits=None, output=None,
                    error=None, finished_at=None, started_at=None, next_attempt_at=None,
                    deadline_at=now + timedelta(seconds=timeout), updated_at=now)
            .execution_options(synchronize_session=False)).rowcount
        if done != 1:  # pragma: no cover - the row lock above makes this unreachable
            raise Conflict(f"Task {task_id} changed while retrying; try again.")
        log(s, task_id, "task retried, estimate charged again",
            data={"credits": estimate, "attempt": attempt, "by": actor.type})
        if staff is not None:
            audit.record(action="tasks.retry", staff=staff, target_type="task", target_id=task_id,
                         before=before, after={"status": "pending", "attempts": attempt,
                                               "charged_credits": estimate, "entry_id": entry.id},
                         ip=ip)
    db.session.expire_all()
    return get(task_id)


def cancel_by_staff(*, task_id: int, reason: str, staff, ip: str | None = None) -> Task:
    """Staff cancelled an open task: full refund through the ledger, audited in one transaction."""
    reason = (reason or "").strip()
    if len(reason) < 3:
        raise ValidationFailed("Say why the task is cancelled (at least 3 characters).",
                               details={"reason": "required"})
    with atomic():
        before = get(task_id)
        status, charged = before.status, before.charged_credits
        task = cancel(task_id=task_id, reason=reason[:500], actor=Actor.of_staff(staff))
        audit.record(action="tasks.cancel", staff=staff, target_type="task", target_id=task_id,
                     before={"status": status, "charged_credits": charged},
                     after={"status": task.status, "refunded_credits": task.refunded_credits},
                     reason=reason[:500], ip=ip)
    return task
