"""The one place that commits, and the database-specific pieces of locking.

PostgreSQL: row locks (SELECT ... FOR UPDATE), READ COMMITTED.
SQLite: a write transaction starts with BEGIN IMMEDIATE, so two writers queue on the busy
timeout instead of one failing with "database is locked" when it upgrades a read lock.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from sqlalchemy import event
from sqlalchemy.engine import Engine
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
    # End the implicit read transaction (the login loader's, say) so that this one starts
    # fresh, and on SQLite starts as a write transaction.
    if s.in_transaction():
        s.commit()
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
