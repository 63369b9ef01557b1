"""Customers of the product and their credit account."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import BigId, Credits, created, db, id_pk, updated, utcnow

SUBSCRIPTION_STATUSES = ("none", "active", "past_due", "cancelled")


class Customer(db.Model):
    __tablename__ = "customers"

    id: Mapped[int] = id_pk()
    external_id: Mapped[str] = mapped_column(String(128), unique=True)
    email: Mapped[str] = mapped_column(String(320), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    plan_id: Mapped[int | None] = mapped_column(ForeignKey("plans.id"), index=True)
    subscription_status: Mapped[str] = mapped_column(String(16), default="none")
    subscription_provider: Mapped[str | None] = mapped_column(String(16))
    subscription_id: Mapped[str | None] = mapped_column(String(128), unique=True)
    current_period_end: Mapped[datetime | None]
    # Provider time of the last subscription event applied; older ones are ignored.
    subscription_event_at: Mapped[datetime | None]
    # Overrides the plan's, else the setting (docs/notices.md); NULL = not overridden.
    low_balance_threshold: Mapped[int | None] = mapped_column(Credits)
    created_at: Mapped[datetime] = created(index=True)
    updated_at: Mapped[datetime] = updated()
    deleted_at: Mapped[datetime | None]

    plan = relationship("Plan", lazy="joined")
    account = relationship("Account", uselist=False, back_populates="customer", lazy="joined")

    __table_args__ = (Index("ix_customers_name", "name"),)

    @property
    def balance(self) -> int:
        return self.account.balance if self.account else 0

    def __repr__(self) -> str:
        return f"<Customer {self.id} {self.external_id}>"


class Account(db.Model):
    """One per customer: the cached balance every ledger movement updates under a row lock."""

    __tablename__ = "accounts"

    id: Mapped[int] = id_pk()
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), unique=True)
    balance: Mapped[int] = mapped_column(Credits, default=0)
    version: Mapped[int] = mapped_column(BigId, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    customer = relationship("Customer", back_populates="account")
