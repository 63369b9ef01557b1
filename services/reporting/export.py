"""CSV export of the global ledger with exactly the transactions page's filters, streamed.

The rows come from the same filter clauses as the page (services.reporting.transactions.conditions), as
plain columns (no ORM objects), through a server-side cursor on PostgreSQL (`yield_per`, which
sets stream_results) and SQLite's lazy cursor: memory stays flat whatever the row count.

Audit: a `transactions.export.start` row is committed before the first byte (so an export that
dies half-way is still on record, with its filters), and a `transactions.export` row with the
exact row count, whether it completed, and the time it took is committed after the last byte
(or when the client goes away), each in its own transaction.
"""
from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import Select, false, func, select

from models import Customer, LedgerEntry, db, utcnow
from services.core import audit, csvsafe
from services.core.db import atomic
from services.ledger import customers as customer_service
from services.reporting.transactions import Filters, conditions

log = logging.getLogger("creditdesk.export")

E = LedgerEntry
# (header, kind, column): the CSV layout. Numbers are written as numbers.
COLUMNS = [
    ("entry_id", "number", E.id),
    ("created_at_utc", "timestamp", E.created_at),
    ("customer_id", "number", E.customer_id),
    ("customer_external_id", "text", Customer.external_id),
    ("customer_email", "text", Customer.email),
    ("customer_name", "text", Customer.name),
    ("type", "text", E.type),
    ("amount", "number", E.amount),
    ("balance_before", "number", E.balance_before),
    ("balance_after", "number", E.balance_after),
    ("feature", "text", E.feature),
    ("quantity", "number", E.quantity),
    ("reference", "text", E.reference),
    ("reason", "text", E.reason),
    ("actor_type", "text", E.actor_type),
    ("actor_id", "text", E.actor_id),
    ("grant_id", "number", E.grant_id),
    ("related_entry_id", "number", E.related_entry_id),
    ("task_id", "number", E.task_id),
    ("payment_id", "number", E.payment_id),
    ("idempotency_key", "text", E.idempotency_key),
]
HEADER = [c[0] for c in COLUMNS]
KINDS = [c[1] for c in COLUMNS]
BATCH = 2000
BYTES_PER_ROW = 135  # measured (bench/export.py: 131 MB for 1,001,792 rows), for the size estimate


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-.")[:32]


@dataclass
class Export:
    filters: Filters
    customer_id: int | None = None  # the resolved customer filter (an id: the stream may run
    unknown_customer: bool = False  # in a session of its own, after the request's has closed)

    def _where(self) -> list:
        if self.unknown_customer:
            return [false()]
        where = conditions(self.filters, None)
        if self.customer_id is not None:
            where.append(E.customer_id == self.customer_id)
        return where

    def statement(self) -> Select:
        """Entries matching the filters, newest first (the page's order), as plain columns."""
        return (select(*[c[2] for c in COLUMNS])
                .join(Customer, Customer.id == E.customer_id)
                .where(*self._where()).order_by(E.id.desc()))

    @property
    def filename(self) -> str:
        """Named after its filters, e.g. transactions-2026-11-01-2026-11-30_debit_chat-<time>Z.csv
        (`all` when unfiltered); only [a-z0-9._-], so the header needs no quoting rules."""
        f = self.filters
        parts = ["-".join(d.isoformat() for d in (f.date_from, f.date_to) if d),
                 *(_slug(v) for v in (f.type, f.feature, f.customer, f.reference))]
        name = "_".join(p for p in parts if p) or "all"
        return f"transactions-{name}-{utcnow():%Y%m%dT%H%M%S}Z.csv"

    def described(self) -> dict[str, str]:
        return self.filters.args()


def prepare(filters: Filters) -> Export:
    """Resolve the customer filter the way the page does (unknown customer: nothing matches)."""
    if filters.customer:
        customer = customer_service.resolve(filters.customer)
        return Export(filters, customer.id if customer else None, unknown_customer=customer is None)
    return Export(filters)


def count(job: Export) -> int:
    """How many rows the export will have (shown before the download starts)."""
    q = select(func.count()).select_from(E).where(*job._where())
    return int(db.session.scalar(q) or 0)


def rows(job: Export, *, batch: int = BATCH) -> Iterator[tuple]:
    """Matching rows as tuples, fetched `batch` at a time through a server-side cursor."""
    conn = db.session.connection()
    if conn.dialect.name == "postgresql":
        # Every row will be read: plan for all of them (hash join), not for the first 10% that
        # a cursor is planned for by default (a nested loop, far slower over a whole ledger).
        conn.exec_driver_sql("SET LOCAL cursor_tuple_fraction = 1.0")
    # Core execution on the session's connection: plain rows, without the ORM's per-row work.
    result = conn.execute(job.statement().execution_options(yield_per=batch))
    try:
        for part in result.partitions():
            yield from part
    finally:
        result.close()


def record(action: str, *, staff_id: int | None, actor: str, ip: str | None, after: dict) -> None:
    """Audit one export or download in its own transaction."""
    with atomic():
        audit.record(action=action, staff=_Who(staff_id, actor), target_type="ledger",
                     after=after, ip=ip)


@dataclass
class _Who:  # what audit.record reads of a staff member, without holding an ORM object
    id: int | None
    email: str


def header() -> str:
    """The CSV's first line (needs no database: it can leave before anything is read)."""
    return csvsafe.header_line(HEADER)


def stream(job: Export, *, staff_id: int | None, actor: str, ip: str | None = None,
           batch: int = BATCH, with_header: bool = True) -> Iterator[str]:
    """The CSV text, chunk by chunk, with the export audited before and after."""
    filters = job.described()
    record("transactions.export.start", staff_id=staff_id, actor=actor, ip=ip,
            after={"filters": filters})
    t0, counter, complete = time.perf_counter(), [0], False
    try:
        yield from csvsafe.stream(HEADER if with_header else None, rows(job, batch=batch),
                                  kinds=KINDS, counter=counter)
        complete = True
    finally:
        seconds = round(time.perf_counter() - t0, 3)
        db.session.rollback()  # end the read transaction (and its cursor) before writing
        record("transactions.export", staff_id=staff_id, actor=actor, ip=ip,
                after={"filters": filters, "rows": counter[0], "complete": complete,
                       "seconds": seconds})
        log.info("export.transactions", extra={"rows": counter[0], "complete": complete,
                                               "seconds": seconds})
