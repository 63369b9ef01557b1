"""Auto top-up (docs/webhooks.md, "Auto top-up"): a customer's setting and each charge it makes."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Credits, created, db, id_pk, updated

ATTEMPT_STATUSES = ("pending", "processing", "succeeded", "failed", "requires_action")


class AutoTopup(db.Model):
    """One per customer. `failures` counts declines in a row; 3 set `paused_at`."""

    __tablename__ = "auto_topups"

    id: Mapped[int] = id_pk()
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), unique=True)
    enabled: Mapped[bool] = mapped_column(default=False)
    threshold: Mapped[int] = mapped_column(Credits)
    package_id: Mapped[int] = mapped_column(ForeignKey("credit_packages.id"))
    monthly_limit: Mapped[int] = mapped_column(default=1)
    failures: Mapped[int] = mapped_column(default=0)
    paused_at: Mapped[datetime | None]
    # Saved at a Checkout with setup_future_usage=off_session (Stripe only).
    stripe_customer_id: Mapped[str | None] = mapped_column(String(128))
    payment_method_id: Mapped[str | None] = mapped_column(String(128))
    card_brand: Mapped[str | None] = mapped_column(String(32))  # shown on the customer page
    card_last4: Mapped[str | None] = mapped_column(String(4))
    created_at: Mapped[datetime] = created()
    updated_at: Mapped[datetime] = updated()


class AutoTopupAttempt(db.Model):
    """One charge, created under the account lock by the debit that crossed the threshold.

    `key` is the idempotency key of the crossing (also sent to Stripe), UNIQUE, so a crossing
    charges at most once; the credits are granted once, keyed by the payment, whether the
    synchronous answer or the webhook lands first.
    """

    __tablename__ = "auto_topup_attempts"

    id: Mapped[int] = id_pk()
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    package_id: Mapped[int] = mapped_column(ForeignKey("credit_packages.id"))
    key: Mapped[str] = mapped_column(String(128), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    balance_at_trigger: Mapped[int] = mapped_column(Credits)
    provider_ref: Mapped[str | None] = mapped_column(String(128))  # the PaymentIntent id
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("payments.id"))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created()
    updated_at: Mapped[datetime] = updated()

    __table_args__ = (
        Index("ix_auto_topup_attempts_customer", "customer_id", "created_at"),
        Index("ix_auto_topup_attempts_status", "status", "id"),
    )
