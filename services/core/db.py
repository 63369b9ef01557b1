"""The one place that commits, and the database-specific pieces of locking.

PostgreSQL: row locks (SELECT ... FOR UPDATE), READ COMMITTED.
SQLite: a write transaction starts with BEGIN IMMEDIATE, so two writers queue on the busy
timeout instead of one failing with "database is locked" when it upgrades a read lock.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import psycopg
from sqlalchemy import BigInteger, any_, bindparam, event
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError, IntegrityError
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
        if s.info.get(_DEFERRED):
            _send_deferred(s, commit=not (s.new or s.dirty or s.deleted))
        s.commit()
    except BaseException:
        s.info.pop(_DEFERRED, None)
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


def configure_engine(engine: Engine, *, ping_idle_seconds: float | None = None) -> None:
    """SQLite pragmas and BEGIN IMMEDIATE for write transactions; on PostgreSQL, the ping of
    connections idle longer than `ping_idle_seconds` (None: never)."""
    if engine.dialect.name == "postgresql":
        if ping_idle_seconds is not None:
            _ping_when_idle(engine, ping_idle_seconds)
        return
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


_IDLE_SINCE = "creditdesk_idle_since"


def _ping_when_idle(engine: Engine, seconds: float) -> None:
    """Ping a pooled connection before use when it sat idle longer than `seconds`; one the
    database closed (a restart, an idle timeout) is replaced by a fresh one, so the call it was
    for does not fail. SQLAlchemy's pre-ping pings on every use: a round trip per request on the
    busy connections, which a restart would close no sooner than the others; under traffic a
    connection idle for less than `seconds` that the database closed fails its call once with
    503 DATABASE_UNAVAILABLE (retryable), as calls running during the restart do."""

    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_conn, record):
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn, record, _proxy):
        since = record.info.pop(_IDLE_SINCE, None)
        if since is None or time.monotonic() - since <= seconds:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except psycopg.Error as err:
            raise DisconnectionError(f"ping failed: {err}") from err  # the pool tries a new one


# --- PostgreSQL: the hot statements straight through the driver ----------------------------------

def driver(s: Session):
    """The psycopg connection under the session's transaction, or None (not PostgreSQL).
    Statements deferred to the COMMIT go first: whoever asks for the connection sees them."""
    conn = s.connection()
    if conn.dialect.name != "postgresql":
        return None
    if s.info.get(_DEFERRED):
        _send_deferred(s, commit=False)
    return conn.connection.driver_connection


# --- PostgreSQL: statements sent with the COMMIT --------------------------------------------------
# A statement whose result nobody reads (the stored reply of an API call, a debit's entry whose id
# is known) can wait for the transaction's end: atomic() sends it, and COMMIT, in one round trip
# (psycopg's pipeline mode). That shortens the time an account's row lock is held to one round
# trip after the last read. Order is kept: the deferred statements go first whenever anything
# else touches the connection (driver(), a Session execute or flush), and an error in one of them
# (a unique key taken meanwhile) surfaces from the commit, rolling everything back.

_DEFERRED = "creditdesk_deferred"


def defer(s: Session, sql: str, params: dict) -> bool:
    """Send `sql` with this transaction's COMMIT (PostgreSQL, inside atomic()); False elsewhere,
    when the caller runs it itself."""
    if not in_atomic() or s.get_bind().dialect.name != "postgresql":
        return False
    s.connection()  # the transaction has begun: the statement belongs to it
    s.info.setdefault(_DEFERRED, []).append((sql, params))
    return True


def _send_deferred(s: Session, *, commit: bool) -> None:
    pending = s.info.pop(_DEFERRED, None)
    if not pending:
        return
    pg = s.connection().connection.driver_connection
    try:
        with pg.pipeline():
            for sql, params in pending:
                pg.cursor().execute(sql, params)
            if commit:
                pg.commit()  # SQLAlchemy's commit that follows finds nothing left to do
    except psycopg.errors.IntegrityError as err:
        raise IntegrityError(pending[0][0], pending[0][1], err) from err


@event.listens_for(Session, "do_orm_execute")
def _before_execute(state) -> None:
    if state.session.info.get(_DEFERRED):
        _send_deferred(state.session, commit=False)


@event.listens_for(Session, "before_flush")
def _before_flush(session, _ctx, _instances) -> None:
    if session.info.get(_DEFERRED):
        _send_deferred(session, commit=False)


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
