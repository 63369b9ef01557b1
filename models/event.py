"""Outbound events: the outbox the product's webhook endpoints are fed from (docs/webhooks.md)."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Json, created, db, id_pk, updated


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


class WebhookEndpoint(db.Model):
    """A URL of the product that receives the events it subscribed to, signed with `secret`.

    The secret is a signing secret (`whsec_<base64>`): it is stored because every delivery is
    signed with it. After a rotation the previous one keeps signing alongside until
    `previous_secret_expires_at`. `failing_since` is the first failure after the last success;
    an endpoint failing every delivery for 3 days is disabled (`disabled_at`, `disabled_reason`).
    """

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = id_pk()
    url: Mapped[str] = mapped_column(String(2000))
    description: Mapped[str] = mapped_column(String(200), default="")
    events: Mapped[list] = mapped_column(Json)
    secret: Mapped[str] = mapped_column(String(100))
    previous_secret: Mapped[str | None] = mapped_column(String(100))
    previous_secret_expires_at: Mapped[datetime | None]
    enabled: Mapped[bool] = mapped_column(default=True)
    disabled_at: Mapped[datetime | None]
    disabled_reason: Mapped[str | None] = mapped_column(String(200))
    failing_since: Mapped[datetime | None]
    deleted_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = created()
    updated_at: Mapped[datetime] = updated()

    @property
    def status(self) -> str:
        if self.deleted_at is not None:
            return "deleted"
        return "enabled" if self.enabled else "disabled"


DELIVERY_STATUSES = ("pending", "succeeded", "failed")


class WebhookDelivery(db.Model):
    """One event to one subscribed endpoint (UNIQUE), retried until it succeeds or 3 days pass.

    While a runner is sending it, `next_attempt_at` is its lease (a runner that dies mid-call
    leaves it due again when the lease ends).
    """

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = id_pk()
    outbox_event_id: Mapped[int] = mapped_column(ForeignKey("outbox_events.id"))
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id"))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None]
    last_status_code: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(String(500))
    delivered_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = created()
    updated_at: Mapped[datetime] = updated()

    __table_args__ = (
        UniqueConstraint("outbox_event_id", "endpoint_id", name="uq_webhook_deliveries_event_endpoint"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_endpoint", "endpoint_id", "id"),
    )


class WebhookAttempt(db.Model):
    """One HTTP try of a delivery: when, the answer's status and an excerpt of its body."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = id_pk()
    delivery_id: Mapped[int] = mapped_column(ForeignKey("webhook_deliveries.id"))
    attempted_at: Mapped[datetime] = created()
    status_code: Mapped[int | None]
    duration_ms: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(String(500))
    response_body: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_webhook_attempts_delivery", "delivery_id", "id"),)
