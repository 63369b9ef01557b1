"""Outbound events: the outbox the product's webhook endpoints are fed from (docs/webhooks.md)."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Json, created, db, id_pk


class OutboxEvent(db.Model):
    """One event, written in the same transaction as the change that causes it.

    `event_id` is the Standard Webhooks `webhook-id` (the same on every retry of every delivery);
    `dispatched_at` is set once deliveries to the subscribed endpoints have been created.
    """

    __tablename__ = "outbox_events"

    id: Mapped[int] = id_pk()
    event_id: Mapped[str] = mapped_column(String(40), unique=True)
    type: Mapped[str] = mapped_column(String(40))
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"))
    data: Mapped[dict] = mapped_column(Json)
    created_at: Mapped[datetime] = created()
    dispatched_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_outbox_events_undispatched", "dispatched_at", "id"),
        Index("ix_outbox_events_customer", "customer_id", "id"),
    )
