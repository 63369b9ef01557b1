"""Daily rollups of the ledger for analytics: derived data, rebuilt from entries at any time."""
from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Date, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Credits, db, id_pk, utcnow


class LedgerDaily(db.Model):
    """Credits and their cost-basis value moved per UTC day, movement kind, feature and bucket.

    Built from allocations (which bucket each entry touched), so `source` and `currency` are the
    bucket's. Kinds: purchased, granted, spent, returned, adjusted, expired, refunded, other.
    `feature` and `currency` are '' when absent, so that they can be part of the key.
    """

    __tablename__ = "ledger_daily"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    feature: Mapped[str] = mapped_column(String(64), primary_key=True)
    source: Mapped[str] = mapped_column(String(16), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    credits: Mapped[int] = mapped_column(Credits)  # signed, as allocated
    # Value at the bucket's cost basis in millionths of the currency's major unit.
    value_micros: Mapped[int] = mapped_column(Credits)


class LedgerRollupState(db.Model):
    """How far ledger_daily is complete: days after `rolled_through` are read live."""

    __tablename__ = "ledger_rollup_state"

    id: Mapped[int] = id_pk()
    rolled_through: Mapped[date | None] = mapped_column(Date)
    max_entry_id: Mapped[int] = mapped_column(Credits, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
