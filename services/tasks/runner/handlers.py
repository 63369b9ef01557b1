"""Handlers: the business effects of a task type once its provider answered.

A handler turns a provider's Result into the task's output (the resource record the product
reads), prices the usage (services.tasks.runner.metering, from the feature price row) and settles
through services.tasks.prepaid: complete (refund estimate - actual) or fail (full refund). It writes the
task log that says which provider served. Settlement is exactly once whoever calls: services.tasks.prepaid
guards it with a conditional status update, and a late caller gets TaskAlreadyFinished.
"""
from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from models import Task, utcnow
from services.core.db import atomic
from services.ledger.rules import Actor
from services.tasks import prepaid as tasks
from services.tasks.runner import metering
from services.tasks.runner.providers import Result

RUNNER = Actor("job", "task_runner")
MAX_TEXT = 60_000  # characters of generated text kept on the task row


def lock_task(s: Session, task_id: int) -> None:
    """The task row, FOR UPDATE (the mode services.tasks.prepaid settles under; SQLite ignores it)."""
    s.execute(select(Task.id).where(Task.id == task_id).with_for_update())


class Handler:
    """The default: output = the provider's output plus usage, priced from the task's feature."""

    def output(self, task: Task, result: Result) -> dict:
        return {**result.output, "provider": result.provider, "model": result.model,
                "usage": result.usage.as_dict()}

    def actual_credits(self, task: Task, result: Result) -> int:
        price = metering.price_of(task.type)
        return metering.usage_credits(price, result.usage, fallback=task.charged_credits)

    def succeed(self, task: Task, result: Result, *, actor: Actor = RUNNER,
                output: dict | None = None) -> Task:
        """Settle a task its provider finished: record who served it, charge the actual usage
        (capped at the estimate), refund the rest. TaskAlreadyFinished when it was settled."""
        actual = self.actual_credits(task, result)
        out = self.output(task, result) if output is None else output
        with atomic() as s:
            # Task row first (then services.tasks.prepaid locks the account): the documented lock order.
            # FOR UPDATE before anything else: a row first updated (FOR NO KEY UPDATE) and then
            # locked FOR UPDATE by services.tasks.prepaid is an upgrade, which deadlocks against a
            # second settler already queued on the row.
            lock_task(s, task.id)
            s.execute(update(Task).where(Task.id == task.id, Task.status == "processing")
                      .values(provider=result.provider, updated_at=utcnow())
                      .execution_options(synchronize_session=False))
            tasks.log(s, task.id, f"served by {result.provider}",
                      data={"provider": result.provider, "model": result.model,
                            "usage": result.usage.as_dict(), "actual_credits": actual,
                            "capped": actual > task.charged_credits})
            return tasks.complete(task_id=task.id, actual_credits=actual, output=out, actor=actor)

    def fail(self, task: Task, error: str, *, actor: Actor = RUNNER) -> Task:
        """The provider(s) could not do it: full refund (TaskAlreadyFinished when settled)."""
        return tasks.fail(task_id=task.id, error=error, actor=actor)


class ChatHandler(Handler):
    def output(self, task: Task, result: Result) -> dict:
        out = super().output(task, result)
        if isinstance(out.get("content"), str) and len(out["content"]) > MAX_TEXT:
            out["content"], out["truncated"] = out["content"][:MAX_TEXT], True
        return out


class ImageHandler(Handler):
    """Images: links to the generated files (copy them to your storage; provider links expire)."""


class VideoHandler(Handler):
    """Videos: the provider's video id and its content URL (fetched with the provider key)."""
