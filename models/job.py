"""Scheduled job runs, their per-customer errors, and received webhook events."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Json, created, db, id_pk, utcnow


class JobRun(db.Model):
    """One run of a job for one period; UNIQUE (job, period) makes a second claim a no-op."""

    __tablename__ = "job_runs"

    id: Mapped[int] = id_pk()
    job: Mapped[str] = mapped_column(String(64))
    period: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="running")  # running|succeeded|partial|failed
    trigger: Mapped[str] = mapped_column(String(16), default="schedule")  # schedule|manual|cron|cli
    host: Mapped[str | None] = mapped_column(String(128))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    users_count: Mapped[int] = mapped_column(default=0)
    processed_count: Mapped[int] = mapped_column(default=0)
    error_count: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict | None] = mapped_column(Json)

    __table_args__ = (
        UniqueConstraint("job", "period"),
        Index("ix_job_runs_job_started", "job", "started_at"),
    )


class JobRunError(db.Model):
    __tablename__ = "job_run_errors"

    id: Mapped[int] = id_pk()
    run_id: Mapped[int] = mapped_column(ForeignKey("job_runs.id"), index=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"))
    error: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = created()


class WebhookEvent(db.Model):
    __tablename__ = "webhook_events"

    id: Mapped[int] = id_pk()
    provider: Mapped[str] = mapped_column(String(16))  # stripe | razorpay | customers
    event_id: Mapped[str] = mapped_column(String(128))
    type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="received")  # received|processed|failed|ignored
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = created()
    processed_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("provider", "event_id"),
        Index("ix_webhook_events_status_created", "status", "created_at"),
        Index("ix_webhook_events_created", "created_at"),
    )
