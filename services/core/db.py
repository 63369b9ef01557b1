"""The one place that commits, and the database-specific pieces of locking.

PostgreSQL: row locks (SELECT ... FOR UPDATE), READ COMMITTED.
SQLite: a write transaction starts with BEGIN IMMEDIATE, so two writers queue on the busy
timeout instead of one failing with "database is locked" when it upgrades a read lock.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import psycopg
from sqlalchemy import BigInteger, any_, bindparam, event
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models.base import db

_immediate: ContextVar[bool] = ContextVar("sqlite_immediate", default=False)
_depth: ContextVar[int] = ContextVar("atomic_depth", default=0)


def in_atomic() -> bool:
    """True inside an atomic() block (a service called by another service)."""
    return _depth.get() > 0


def is_sqlite(session: Session | None = None) -> bool:
    return (session or db.session).get_bind().dialect.name == "sqlite"


@contextmanager
def atomic() -> Iterator[Session]:
    """Run the block in one transaction: commit on success, roll back on any error.

    Nested calls join the outer transaction, so inner helpers only flush.
    """
    s = db.session()  # the real Session behind the scoped proxy
    depth = _depth.get()
    if depth:
        token = _depth.set(depth + 1)
        try:
            yield s
        finally:
            _depth.reset(token)
        return
    if s.in_transaction():
        _end_implicit(s)
    t_imm, t_depth = _immediate.set(True), _depth.set(1)
    try:
        yield s
        s.commit()
    except BaseException:
        s.rollback()
        raise
    finally:
        _immediate.reset(t_imm)
        _depth.reset(t_depth)


def _end_implicit(s: Session) -> None:
    """An implicit read transaction is open (the API key lookup's, the login loader's).

    SQLite: commit it, so that this one starts as a write transaction (BEGIN IMMEDIATE).
    PostgreSQL, when it holds no pending change: carry on in it, with every loaded object
    expired so that it is read again. READ COMMITTED gives each statement a fresh snapshot, so
    this reads what a new transaction would, and saves a COMMIT, a pool check-in, a check-out
    with its ping and a BEGIN: four round trips on every API debit.
    """
    if s.get_bind().dialect.name == "postgresql" and not (s.new or s.dirty or s.deleted):
        s.expire_all()
        return
    s.commit()


def configure_engine(engine: Engine) -> None:
    """SQLite pragmas and BEGIN IMMEDIATE for write transactions; nothing for PostgreSQL."""
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record):  # pragma: no cover - exercised by every sqlite test
        dbapi_conn.isolation_level = None  # let SQLAlchemy's "begin" event emit BEGIN
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE" if _immediate.get() else "BEGIN")


# --- PostgreSQL: the hot statements straight through the driver ----------------------------------

def driver(s: Session):
    """The psycopg connection under the session's transaction, or None (not PostgreSQL)."""
    conn = s.connection()
    return conn.connection.driver_connection if conn.dialect.name == "postgresql" else None


def run(pg, sql: str, params: dict, row_factory=None):
    """Execute on the driver connection; a constraint violation surfaces as SQLAlchemy's
    IntegrityError, exactly as it would through the session."""
    try:
        cur = pg.cursor(row_factory=row_factory) if row_factory else pg.cursor()
        return cur.execute(sql, params)
    except psycopg.errors.IntegrityError as err:
        raise IntegrityError(sql, params, err) from err


def among(s: Session, column, values, item_type=BigInteger):
    """column IN values: one array parameter on PostgreSQL (a thousand binds cost more to render
    and for the driver to parse than the query costs to run)."""
    values = list(values)
    if s.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, values, type_=ARRAY(item_type)))
    return column.in_(values)
