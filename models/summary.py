"""Per-customer sums of the ledger up to an entry: a cache the statement builds on."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey
from sqlalchemy.orm import Mapped, mapped_column

from models.base import BigId, Credits, Json, db, utcnow


class StatementSummary(db.Model):
    """Lifetime movements of one customer's entries with id <= through_entry_id.

    Entries are immutable and a customer's entries are written under its account lock, so the
    entries up to an id never change: summed once, they stay true. The statement adds the
    entries after `through_entry_id` (services/statement_summary.py). Derived data only: it can
    be deleted at any time.
    """

    __tablename__ = "statement_summaries"

    customer_id: Mapped[int] = mapped_column(BigId, ForeignKey("customers.id"), primary_key=True)
    through_entry_id: Mapped[int] = mapped_column(Credits)
    entries: Mapped[int] = mapped_column(Credits)
    sums: Mapped[dict] = mapped_column(Json)  # {entry type: [credits in, credits out]}
    features: Mapped[list] = mapped_column(Json)  # features used, sorted
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
