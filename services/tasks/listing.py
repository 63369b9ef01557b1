"""Tasks as staff see them: by status with counts, keyset-paged, and one task with its story."""
from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import joinedload, noload

from models import LedgerEntry, Task, TaskLog, db
from models.task import TASK_STATUSES
from services.core.paging import ListFilters, keyset
from services.ledger import customers as customer_service
from services.ledger.statement import actor_labels
from services.tasks.prepaid import get

MAX_PAGE = 200
LOG_LIMIT = 200


@dataclass
class Filters(ListFilters):
    status: str = ""
    customer: str = ""
    type: str = ""

    @classmethod
    def parse(cls, args) -> Filters:
        status = (args.get("status") or "").strip()
        return cls(status=status if status in TASK_STATUSES else "",
                   customer=(args.get("customer") or "").strip()[:320],
                   type=(args.get("type") or "").strip()[:64])


@dataclass
class Page:
    tasks: list[Task]
    more: bool
    next_before: int | None
    counts: dict[str, int]
    filters: Filters
    unknown_customer: bool = False
    types: list[str] = field(default_factory=list)


def page(filters: Filters, *, before_id: int | None = None, limit: int = 50) -> Page:
    """Tasks newest first (keyset by id), with the count per status for the tabs."""
    limit = max(1, min(limit, MAX_PAGE))
    s = db.session
    q = select(Task).options(joinedload(Task.customer))
    counts_q = select(Task.status, func.count(Task.id)).group_by(Task.status)
    if filters.customer:
        c = customer_service.resolve(filters.customer)
        if c is None:
            return Page(tasks=[], more=False, next_before=None, counts={}, filters=filters,
                        unknown_customer=True, types=types())
        q = q.where(Task.customer_id == c.id)
        counts_q = counts_q.where(Task.customer_id == c.id)
    if filters.type:
        q = q.where(Task.type == filters.type)
        counts_q = counts_q.where(Task.type == filters.type)
    if filters.status:
        q = q.where(Task.status == filters.status)
    rows, next_before = keyset(q, Task.id, cursor=before_id, limit=limit)
    counts = dict.fromkeys(TASK_STATUSES, 0)
    counts.update({st: int(n) for st, n in s.execute(counts_q)})
    return Page(tasks=rows, more=next_before is not None, next_before=next_before, counts=counts,
                filters=filters, types=types())


def types() -> list[str]:
    """Task types seen so far (for the filter)."""
    return list(db.session.scalars(select(Task.type).group_by(Task.type).order_by(Task.type)))


@dataclass
class Detail:
    task: Task
    logs: list[TaskLog]
    entries: list[LedgerEntry]
    actors: dict


def detail(task_id: int) -> Detail:
    """A task with its logs and the ledger entries it caused (charges, refunds)."""
    task = get(task_id)
    logs = list(db.session.scalars(select(TaskLog).where(TaskLog.task_id == task_id)
                                   .order_by(TaskLog.id).limit(LOG_LIMIT)))
    entries = list(db.session.scalars(
        select(LedgerEntry).options(noload(LedgerEntry.allocations))
        .where(LedgerEntry.task_id == task_id).order_by(LedgerEntry.id)))
    return Detail(task=task, logs=logs, entries=entries, actors=actor_labels(entries))
