"""A customer's credit statement: the ledger as a timeline with its running balance.

Every entry stores balance_after, so the running balance of any page (filtered or not) is
exact without summing history. Pages are keyset-paged by entry id, newest first.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import noload

from models import LedgerEntry, Staff, db
from models.ledger import ENTRY_TYPES
from services.ledger import statement_summary

MAX_PAGE = 200


@dataclass
class Filters:
    types: list[str] = field(default_factory=list)
    feature: str = ""

    @classmethod
    def parse(cls, *, type: str | Iterable[str] | None = None, feature: str | None = None) -> Filters:
        raw = [type] if isinstance(type, str) else list(type or [])
        types = [t for t in raw if t in ENTRY_TYPES]
        return cls(types=types, feature=(feature or "").strip()[:64])

    @property
    def active(self) -> bool:
        return bool(self.types or self.feature)

    def args(self) -> dict:
        """The filters as query-string arguments (for links that keep them)."""
        out: dict = {}
        if self.types:
            out["type"] = self.types[0] if len(self.types) == 1 else self.types
        if self.feature:
            out["feature"] = self.feature
        return out


@dataclass
class Page:
    entries: list[LedgerEntry]
    more: bool
    next_before: int | None
    actors: dict[tuple[str, str | None], str]
    filters: Filters


def page(*, customer_id: int, filters: Filters | None = None, before_id: int | None = None,
         limit: int = 25) -> Page:
    """One page of a customer's statement, newest first, with who made each entry."""
    filters = filters or Filters()
    limit = max(1, min(limit, MAX_PAGE))
    q = (select(LedgerEntry).options(noload(LedgerEntry.allocations))
         .where(LedgerEntry.customer_id == customer_id))
    if before_id is not None:
        q = q.where(LedgerEntry.id < before_id)
    if filters.types:
        q = q.where(LedgerEntry.type.in_(filters.types))
    if filters.feature:
        q = q.where(LedgerEntry.feature == filters.feature)
    rows = list(db.session.scalars(q.order_by(LedgerEntry.id.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(entries=rows, more=more, next_before=rows[-1].id if more else None,
                actors=actor_labels(rows), filters=filters)


def features(customer_id: int) -> list[str]:
    """Features this customer has used, for the statement's filter."""
    return statement_summary.summary(customer_id).features


def totals(customer_id: int) -> dict[str, int]:
    """Lifetime movements of the account: credits in, spent, returned, expired, removed."""
    # A stored prefix plus the newest entries (services/statement_summary.py), not a scan of
    # the whole history on every view.
    by = {t: (p, n) for t, (p, n) in statement_summary.summary(customer_id).sums.items()}

    def get(t: str, i: int) -> int:
        return by.get(t, (0, 0))[i]

    return {"in": get("grant", 0) + get("adjustment", 0),
            "spent": get("debit", 1) - get("refund", 0) - get("reversal", 0),
            "expired": get("expiry", 1) + get("clawback", 1),
            "removed": get("adjustment", 1) + get("reversal", 1)}


def actor_labels(entries: Iterable) -> dict[tuple[str, str | None], str]:
    """(actor_type, actor_id) -> readable label; one query for all staff on the page."""
    pairs = {(e.actor_type, e.actor_id) for e in entries}
    staff_ids = {int(i) for t, i in pairs if t == "staff" and i and i.isdigit()}
    emails = {}
    if staff_ids:
        emails = {str(sid): email for sid, email in db.session.execute(
            select(Staff.id, Staff.email).where(Staff.id.in_(staff_ids)))}
    out = {}
    for t, i in pairs:
        if t == "staff":
            out[(t, i)] = emails.get(i or "", f"staff #{i}")
        elif t == "api_key":
            out[(t, i)] = f"API key #{i}" if i else "API key"
        elif t == "job":
            out[(t, i)] = f"job {i}" if i and not i.isdigit() else "scheduled job"
        elif t == "webhook":
            out[(t, i)] = f"{i} webhook" if i else "webhook"
        else:
            out[(t, i)] = "system"
    return out
