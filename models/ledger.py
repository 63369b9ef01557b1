"""Grants (credit buckets), immutable ledger entries, allocations and idempotency records."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint, event
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Credits, Json, created, db, id_pk

# Where a bucket's credits came from; the one list (services/ledger/rules.py takes it from here).
GRANT_SOURCES = ("purchase", "subscription", "distribution", "promo", "adjustment", "refund", "deficit")
PAID_SOURCES = ("purchase", "subscription")  # paid for: money value, refundable, never expire
ENTRY_TYPES = ("grant", "debit", "refund", "adjustment", "expiry", "clawback", "reversal")
ACTOR_TYPES = ("staff", "api_key", "job", "webhook", "system")


class CreditGrant(db.Model):
    """A bucket of credits; debits draw from buckets soonest-expiring first, then oldest."""

    __tablename__ = "credit_grants"

    id: Mapped[int] = id_pk()
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    source: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(Credits)
    # Negative only for a 'deficit' bucket, made by an explicit overdraw adjustment.
    remaining: Mapped[int] = mapped_column(Credits)
    expires_at: Mapped[datetime | None]
    expired_at: Mapped[datetime | None]
    # What the customer paid for this bucket (purchases): value per credit = cost / amount.
    cost_minor: Mapped[int] = mapped_column(Credits, default=0)
    currency: Mapped[str | None] = mapped_column(String(3))
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("payments.id"), index=True)
    plan_id: Mapped[int | None] = mapped_column(ForeignKey("plans.id"))
    period: Mapped[str | None] = mapped_column(String(16))  # e.g. 2026-11 for distributions
    job_run_id: Mapped[int | None] = mapped_column(ForeignKey("job_runs.id"))
    created_at: Mapped[datetime] = created()
    # When the grant.expiring notice was written (at most once per grant).
    expiry_notice_at: Mapped[datetime | None]

    __table_args__ = (
        # The draw-down scan: this account's buckets with credits left, in draw order.
        Index("ix_credit_grants_account_live", "account_id", "remaining", "expires_at"),
        Index("ix_credit_grants_expiry", "expires_at", "remaining"),
        CheckConstraint("remaining <= amount OR source = 'deficit'", name="remaining_le_amount"),
    )

    @property
    def is_paid(self) -> bool:
        return self.source in PAID_SOURCES


class LedgerEntry(db.Model):
    """An immutable movement of credits. Never updated or deleted: corrections are new entries."""

    __tablename__ = "ledger_entries"

    id: Mapped[int] = id_pk()
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    type: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(Credits)  # signed
    balance_before: Mapped[int] = mapped_column(Credits)
    balance_after: Mapped[int] = mapped_column(Credits)
    actor_type: Mapped[str] = mapped_column(String(16), default="system")
    actor_id: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
    feature: Mapped[str | None] = mapped_column(String(64))
    quantity: Mapped[int | None] = mapped_column(Credits)
    reference: Mapped[str | None] = mapped_column(String(200))
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    request_hash: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(64))
    grant_id: Mapped[int | None] = mapped_column(ForeignKey("credit_grants.id"))
    related_entry_id: Mapped[int | None] = mapped_column(ForeignKey("ledger_entries.id"), index=True)
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("payments.id"), index=True)
    task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id"), index=True)
    job_run_id: Mapped[int | None] = mapped_column(ForeignKey("job_runs.id"))
    meta: Mapped[dict | None] = mapped_column("metadata", Json)
    created_at: Mapped[datetime] = created()

    allocations = relationship("Allocation", back_populates="entry", lazy="selectin")

    __table_args__ = (
        Index("ix_ledger_entries_customer_id_id", "customer_id", "id"),
        Index("ix_ledger_entries_customer_created", "customer_id", "created_at"),
        Index("ix_ledger_entries_type_created", "type", "created_at"),
        Index("ix_ledger_entries_created", "created_at"),
        Index("ix_ledger_entries_reference", "reference"),
        Index("ix_ledger_entries_feature_created", "feature", "created_at"),
    )


class Allocation(db.Model):
    """How much of one entry moved through one grant: negative drawn, positive returned."""

    __tablename__ = "allocations"

    id: Mapped[int] = id_pk()
    entry_id: Mapped[int] = mapped_column(ForeignKey("ledger_entries.id"), index=True)
    grant_id: Mapped[int] = mapped_column(ForeignKey("credit_grants.id"), index=True)
    credits: Mapped[int] = mapped_column(Credits)

    entry = relationship("LedgerEntry", back_populates="allocations")
    grant = relationship("CreditGrant")


class IdempotencyRecord(db.Model):
    """The stored HTTP reply of a money-moving API call, replayed for a retry with the same key."""

    __tablename__ = "idempotency_records"

    id: Mapped[int] = id_pk()
    scope: Mapped[str] = mapped_column(String(64))  # e.g. "POST /api/v1/tasks"
    key: Mapped[str] = mapped_column(String(200))
    request_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="in_progress")  # in_progress|completed
    response_status: Mapped[int | None]
    response_body: Mapped[dict | None] = mapped_column(Json)
    created_at: Mapped[datetime] = created()
    expires_at: Mapped[datetime] = mapped_column(index=True)

    __table_args__ = (UniqueConstraint("scope", "key"),)


# Entries and allocations are immutable in the database itself, not only by convention.
_PG_GUARD = """
CREATE OR REPLACE FUNCTION creditdesk_immutable() RETURNS trigger AS $$
BEGIN RAISE EXCEPTION USING MESSAGE = TG_TABLE_NAME || ' rows are immutable'; END $$ LANGUAGE plpgsql;
"""
IMMUTABLE_TABLES = ("ledger_entries", "allocations")


def immutability_ddl(dialect: str, table: str) -> list[str]:
    """Statements that make `table` refuse UPDATE and DELETE (used by create_all and migrations)."""
    if dialect == "postgresql":
        return [_PG_GUARD, f"DROP TRIGGER IF EXISTS {table}_immutable ON {table}",
                f"CREATE TRIGGER {table}_immutable BEFORE UPDATE OR DELETE ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION creditdesk_immutable()"]
    if dialect == "sqlite":
        return [f"CREATE TRIGGER IF NOT EXISTS {table}_no_update BEFORE UPDATE ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} rows are immutable'); END",
                f"CREATE TRIGGER IF NOT EXISTS {table}_no_delete BEFORE DELETE ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} rows are immutable'); END"]
    return []


def truncate_guard_ddl(dialect: str, table: str) -> list[str]:
    """Statements that make `table` refuse TRUNCATE (migration 0010), which the row triggers above
    do not see. PostgreSQL only: SQLite has no TRUNCATE (its `DELETE FROM t` fires the row
    triggers)."""
    if dialect != "postgresql":
        return []
    return [_PG_GUARD, f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}",
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION creditdesk_immutable()"]


def _guard(table, connection, **_kw):
    dialect = connection.dialect.name
    for stmt in immutability_ddl(dialect, table.name) + truncate_guard_ddl(dialect, table.name):
        connection.exec_driver_sql(stmt)


for _t in (LedgerEntry.__table__, Allocation.__table__):
    event.listen(_t, "after_create", _guard)
