"""Prepaid AI tasks (seed 003) and their logs."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Credits, Json, created, db, id_pk, updated

TASK_STATUSES = ("pending", "processing", "succeeded", "failed", "cancelled", "timed_out")
FINISHED = ("succeeded", "failed", "cancelled", "timed_out")


class Task(db.Model):
    __tablename__ = "tasks"

    id: Mapped[int] = id_pk()
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    type: Mapped[str] = mapped_column(String(64))
    mode: Mapped[str] = mapped_column(String(8), default="sync")  # sync | async
    status: Mapped[str] = mapped_column(String(16), default="pending")
    priority: Mapped[int] = mapped_column(default=0)
    estimated_credits: Mapped[int] = mapped_column(Credits)
    charged_credits: Mapped[int] = mapped_column(Credits, default=0)
    actual_credits: Mapped[int | None] = mapped_column(Credits)  # charged for the work: <= charged
    # What the work used, uncapped: above actual_credits when usage outran the estimate.
    usage_credits: Mapped[int | None] = mapped_column(Credits)
    refunded_credits: Mapped[int] = mapped_column(Credits, default=0)
    # Not a foreign key: entries point at tasks, and a cycle would complicate bulk loads.
    charge_entry_id: Mapped[int | None] = mapped_column(Credits)
    input: Mapped[dict | None] = mapped_column(Json)
    output: Mapped[dict | None] = mapped_column(Json)
    error: Mapped[str | None] = mapped_column(Text)
    provider: Mapped[str | None] = mapped_column(String(64))
    external_task_id: Mapped[str | None] = mapped_column(String(128))
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None]
    deadline_at: Mapped[datetime]
    created_at: Mapped[datetime] = created()
    updated_at: Mapped[datetime] = updated()
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    customer = relationship("Customer")
    logs = relationship("TaskLog", order_by="TaskLog.id", lazy="dynamic")

    __table_args__ = (
        Index("ix_tasks_pending", "status", "priority", "created_at"),
        Index("ix_tasks_deadline", "status", "deadline_at"),
        Index("ix_tasks_async", "status", "mode", "external_task_id"),
        Index("ix_tasks_customer_created", "customer_id", "created_at"),
    )

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


class TaskLog(db.Model):
    __tablename__ = "task_logs"

    id: Mapped[int] = id_pk()
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), index=True)
    level: Mapped[str] = mapped_column(String(8), default="info")
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict | None] = mapped_column(Json)
    created_at: Mapped[datetime] = created()
