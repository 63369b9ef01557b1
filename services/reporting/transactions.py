"""The global ledger for staff: every entry of every customer, filtered and keyset-paged.

The same Filters drive the page and (in the finance area) the CSV export, so an export is
exactly what the page shows.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from sqlalchemy import Select, select
from sqlalchemy.orm import noload

from models import Customer, FeaturePrice, LedgerEntry, db
from models.ledger import ENTRY_TYPES
from services.core import params
from services.ledger import customers as customer_service
from services.ledger.statement import actor_labels

MAX_PAGE = 200


def _date(raw: str | None) -> date | None:
    return params.to_date(raw)


@dataclass
class Filters:
    """What the staff asked for; invalid values are dropped, never an error page."""

    date_from: date | None = None
    date_to: date | None = None  # inclusive: the whole day, UTC
    customer: str = ""
    type: str = ""
    feature: str = ""
    reference: str = ""
    errors: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, args) -> Filters:
        f = cls(date_from=_date(args.get("from")), date_to=_date(args.get("to")),
                customer=(args.get("customer") or "").strip()[:320],
                type=(args.get("type") or "").strip(), feature=(args.get("feature") or "").strip()[:64],
                reference=(args.get("reference") or "").strip()[:200])
        if args.get("from") and f.date_from is None:
            f.errors.append("The start date was not a date (YYYY-MM-DD) and is ignored.")
        if args.get("to") and f.date_to is None:
            f.errors.append("The end date was not a date (YYYY-MM-DD) and is ignored.")
        if f.type and f.type not in ENTRY_TYPES:
            f.errors.append(f"Unknown entry type {f.type!r} is ignored.")
            f.type = ""
        if f.date_from and f.date_to and f.date_from > f.date_to:
            f.date_from, f.date_to = f.date_to, f.date_from
        return f

    @property
    def active(self) -> bool:
        return any((self.date_from, self.date_to, self.customer, self.type, self.feature,
                    self.reference))

    def args(self) -> dict[str, str]:
        """The filters as a query string (for paging links and the export)."""
        out = {"from": self.date_from.isoformat() if self.date_from else "",
               "to": self.date_to.isoformat() if self.date_to else "",
               "customer": self.customer, "type": self.type, "feature": self.feature,
               "reference": self.reference}
        return {k: v for k, v in out.items() if v}


@dataclass
class Page:
    entries: list[LedgerEntry]
    more: bool
    next_before: int | None
    actors: dict
    filters: Filters
    customer: Customer | None = None  # the resolved customer filter
    unknown_customer: bool = False


def conditions(filters: Filters, customer: Customer | None = None) -> list:
    """The WHERE clauses of the filters on LedgerEntry (shared by the page and the CSV export)."""
    out = []
    if filters.date_from:
        out.append(LedgerEntry.created_at >= datetime.combine(filters.date_from, time.min))
    if filters.date_to:
        out.append(LedgerEntry.created_at < datetime.combine(filters.date_to + timedelta(days=1),
                                                             time.min))
    if customer is not None:
        out.append(LedgerEntry.customer_id == customer.id)
    if filters.type:
        out.append(LedgerEntry.type == filters.type)
    if filters.feature:
        out.append(LedgerEntry.feature == filters.feature)
    if filters.reference:
        out.append(LedgerEntry.reference == filters.reference)
    return out


def query(filters: Filters, customer: Customer | None = None) -> Select:
    """Entries matching the filters, newest first, with their customer."""
    q = (select(LedgerEntry, Customer.external_id, Customer.email, Customer.name)
         .join(Customer, Customer.id == LedgerEntry.customer_id)
         .options(noload(LedgerEntry.allocations)))
    return q.where(*conditions(filters, customer)).order_by(LedgerEntry.id.desc())


@dataclass
class Row:
    entry: LedgerEntry
    external_id: str
    email: str
    name: str


def page(filters: Filters, *, before_id: int | None = None, limit: int = 50) -> Page:
    """One page of the global ledger (keyset: entries older than `before_id`)."""
    limit = max(1, min(limit, MAX_PAGE))
    customer = None
    if filters.customer:
        customer = customer_service.resolve(filters.customer)
        if customer is None:
            return Page(entries=[], more=False, next_before=None, actors={}, filters=filters,
                        unknown_customer=True)
    # Pick the page's ids first (an index-only scan and sort of ids), then load those rows:
    # sorting whole rows of a broad filter (a type over a month) is what costs.
    ids = select(LedgerEntry.id).where(*conditions(filters, customer))
    if before_id is not None:
        ids = ids.where(LedgerEntry.id < before_id)
    ids = ids.order_by(LedgerEntry.id.desc()).limit(limit + 1)
    q = (select(LedgerEntry, Customer.external_id, Customer.email, Customer.name)
         .join(Customer, Customer.id == LedgerEntry.customer_id)
         .options(noload(LedgerEntry.allocations))
         .where(LedgerEntry.id.in_(ids)).order_by(LedgerEntry.id.desc()))
    result = db.session.execute(q).all()
    rows = [Row(entry=r[0], external_id=r[1], email=r[2], name=r[3]) for r in result]
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(entries=rows, more=more, next_before=rows[-1].entry.id if more else None,
                actors=actor_labels(r.entry for r in rows), filters=filters, customer=customer)


def feature_names() -> list[str]:
    """Priced features, for the filter's suggestions."""
    return list(db.session.scalars(select(FeaturePrice.feature).order_by(FeaturePrice.feature)))
