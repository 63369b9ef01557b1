"""Payments taken through Stripe or Razorpay, and refunds of them."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Credits, Json, created, db, id_pk, updated

PAYMENT_STATUSES = ("created", "paid", "failed", "refunded", "partially_refunded")
REFUND_STATUSES = ("requested", "approved", "processing", "processed", "failed", "rejected")


class Payment(db.Model):
    __tablename__ = "payments"

    id: Mapped[int] = id_pk()
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    provider: Mapped[str] = mapped_column(String(16))  # stripe | razorpay
    kind: Mapped[str] = mapped_column(String(16), default="package")  # package | subscription
    # Our order: Stripe Checkout Session id, Razorpay order id, Stripe invoice id.
    provider_order_id: Mapped[str | None] = mapped_column(String(128))
    # The money movement: Stripe PaymentIntent id, Razorpay payment id.
    provider_payment_id: Mapped[str | None] = mapped_column(String(128))
    package_id: Mapped[int | None] = mapped_column(ForeignKey("credit_packages.id"))
    plan_id: Mapped[int | None] = mapped_column(ForeignKey("plans.id"))
    amount_minor: Mapped[int] = mapped_column(Credits)
    currency: Mapped[str] = mapped_column(String(3))
    credits: Mapped[int] = mapped_column(Credits)
    status: Mapped[str] = mapped_column(String(24), default="created")
    refunded_minor: Mapped[int] = mapped_column(Credits, default=0)
    meta: Mapped[dict | None] = mapped_column("metadata", Json)
    created_at: Mapped[datetime] = created()
    paid_at: Mapped[datetime | None]

    customer = relationship("Customer")

    __table_args__ = (
        UniqueConstraint("provider", "provider_order_id"),
        UniqueConstraint("provider", "provider_payment_id"),
        Index("ix_payments_customer_created", "customer_id", "created_at"),
        Index("ix_payments_status_paid", "status", "paid_at"),
    )


class Refund(db.Model):
    __tablename__ = "refunds"

    id: Mapped[int] = id_pk()
    payment_id: Mapped[int] = mapped_column(ForeignKey("payments.id"), index=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="requested")
    credits: Mapped[int] = mapped_column(Credits)
    amount_minor: Mapped[int] = mapped_column(Credits)
    currency: Mapped[str] = mapped_column(String(3))
    reason: Mapped[str] = mapped_column(Text, default="")
    # Our own id, sent to the provider as its idempotency key before the call.
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    provider_refund_id: Mapped[str | None] = mapped_column(String(128), unique=True)
    requested_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    approved_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    clawback_entry_id: Mapped[int | None] = mapped_column(ForeignKey("ledger_entries.id"))
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = created(index=True)
    updated_at: Mapped[datetime] = updated()
    processed_at: Mapped[datetime | None]

    payment = relationship("Payment")
    customer = relationship("Customer")

    __table_args__ = (Index("ix_refunds_status_created", "status", "created_at"),)
