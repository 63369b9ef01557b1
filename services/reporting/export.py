"""CSV export of the global ledger with exactly the transactions page's filters, streamed.

The rows come from the same filter clauses as the page (services.reporting.transactions.conditions),
in one statement() shared by both writers; memory stays flat whatever the row count.

On PostgreSQL the database writes the CSV itself: `COPY (<the same SELECT, cells formatted in
SQL>) TO STDOUT WITH (FORMAT csv)` on the session's own connection, its rows (one COPY message
each) relayed in 64 KB chunks. On SQLite, and as the reference, csvsafe writes plain columns
(no ORM objects) read through SQLite's lazy cursor (or a server-side cursor, `yield_per`).
The cell rules of services.core.csvsafe are expressed in SQL (copy_statement), so the bytes of
both are identical (tests/reporting/test_export_copy.py compares them on hostile data).

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

from sqlalchemy import Select, case, false, func, literal, select

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
CHUNK = 64 * 1024  # bytes (or characters) per yielded piece of the stream
BYTES_PER_ROW = 135  # measured (bench/export.py: 131 MB for 1,001,792 rows), for the size estimate


def _sql_cell(kind: str, column):
    """One column as csvsafe.row_fixer writes it, in PostgreSQL (the bytes must be the same).

    number: the integer's text (NULL: empty). timestamp: isoformat(sep=" ", timespec="seconds")
    of a naive UTC time, i.e. to_char(... 'YYYY-MM-DD HH24:MI:SS'), seconds truncated like
    Python. text: a leading apostrophe when the first character is one of csvsafe's triggers
    (ascii() is the first character's code point in UTF-8, 0 for the empty string);
    the empty string becomes NULL because COPY quotes an empty string ("") where csv.writer
    writes nothing. Quoting itself (comma, quote, CR, LF: quoted, quotes doubled) is the same
    in both writers; only the line end differs (COPY's LF, csv's CRLF: copy_chunks fixes it).
    """
    if kind == "number":
        return column
    if kind == "timestamp":
        return func.to_char(column, "YYYY-MM-DD HH24:MI:SS")
    if kind == "text":
        return case((func.ascii(column).in_(_SQL_TRIGGERS), literal(csvsafe.PREFIX) + column),
                    else_=func.nullif(column, ""))
    raise ValueError(f"no SQL form for column kind {kind!r}")


# csvsafe's trigger characters (one definition) as the code points ascii() returns for a first
# character: an integer test, measurably cheaper per cell than comparing left(text, 1).
_SQL_TRIGGERS = [ord(c) for c in (*csvsafe.DANGEROUS, csvsafe.PREFIX)]


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

    def statement(self, columns: list | None = None) -> Select:
        """Entries matching the filters, newest first (the page's order), as plain columns (or
        `columns`: the same rows, the same order, other expressions)."""
        return (select(*(columns if columns is not None else [c[2] for c in COLUMNS]))
                .join(Customer, Customer.id == E.customer_id)
                .where(*self._where()).order_by(E.id.desc()))

    def copy_statement(self) -> Select:
        """statement() with every cell as csvsafe writes it, for PostgreSQL's COPY ... CSV."""
        return self.statement([_sql_cell(kind, column).label(name) for name, kind, column in COLUMNS])

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


def python_chunks(job: Export, counter: list, *, batch: int = BATCH) -> Iterator[str]:
    """The CSV rows (no header) written in Python: csvsafe over rows() (SQLite, and the reference)."""
    yield from csvsafe.stream(None, rows(job, batch=batch), kinds=KINDS, counter=counter)


def copy_chunks(job: Export, counter: list, *, chunk: int = CHUNK) -> Iterator[bytes]:
    """The CSV rows (no header) written by PostgreSQL: COPY (copy_statement()) TO STDOUT, on the
    session's connection (checked out until the caller ends the session's transaction).

    COPY sends one message per row, ending in LF; csv.writer ends a row with CRLF. A line break
    inside a cell is quoted and written as-is by both, so only each row's last byte changes.
    Closing this iterator early (the client went away) cancels the COPY; the transaction is
    then aborted and the caller's rollback returns the connection clean to the pool.
    """
    conn = db.session.connection()
    compiled = job.copy_statement().compile(dialect=conn.dialect,
                                            compile_kwargs={"render_postcompile": True})
    raw = conn.connection.driver_connection  # the psycopg connection, in the session's transaction
    with raw.cursor() as cur:
        cur.execute("SET LOCAL client_encoding = 'UTF8'")  # the bytes csvsafe's text would have
        buf = bytearray()
        n = 0
        with cur.copy(f"COPY ({compiled}) TO STDOUT WITH (FORMAT csv)", compiled.params) as cp:
            for row in cp:
                buf += row[:-1]
                buf += b"\r\n"
                n += 1
                if len(buf) >= chunk:
                    counter[0] = n
                    yield bytes(buf)
                    buf.clear()
        counter[0] = n
        if buf:
            yield bytes(buf)


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
           batch: int = BATCH, with_header: bool = True) -> Iterator[str | bytes]:
    """The CSV, chunk by chunk (PostgreSQL's COPY on PostgreSQL, csvsafe on SQLite), with the
    export audited before and after. Run it where the session may be used (the request's
    context pushed again, dashboard/views/exports.py): the COPY holds the session's connection
    until the finally below ends its transaction, whether the client read to the end or not."""
    filters = job.described()
    record("transactions.export.start", staff_id=staff_id, actor=actor, ip=ip,
            after={"filters": filters})
    t0, counter, complete = time.perf_counter(), [0], False
    try:
        if with_header:
            yield header()
        if db.session.get_bind().dialect.name == "postgresql":
            yield from copy_chunks(job, counter)
        else:
            yield from python_chunks(job, counter, batch=batch)
        complete = True
    finally:
        seconds = round(time.perf_counter() - t0, 3)
        db.session.rollback()  # end the read transaction (and its cursor) before writing
        record("transactions.export", staff_id=staff_id, actor=actor, ip=ip,
                after={"filters": filters, "rows": counter[0], "complete": complete,
                       "seconds": seconds})
        log.info("export.transactions", extra={"rows": counter[0], "complete": complete,
                                               "seconds": seconds})
