"""Leader election: exactly one process across workers and replicas runs the scheduler.

PostgreSQL: a session advisory lock held on a dedicated connection (the server frees it when the
leader's process or connection dies). SQLite: an exclusive file lock under instance/ (the OS frees
it). `leader_info` tells any process who leads now, for the jobs page.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
from datetime import datetime
from pathlib import Path

from flask import Flask
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from jobs.schedules import naive, utcnow
from models import db
from services.jobs import runs as jobruns

log = logging.getLogger("creditdesk.scheduler")

LOCK_CLASS, LOCK_OBJ = 1128616776, 1  # pg_try_advisory_lock(int4, int4): "CDSH", scheduler


class PgLeaderLock:
    """Session advisory lock on a connection of its own: PostgreSQL frees it when we die."""

    def __init__(self, url, name: str):
        self.engine = create_engine(url, poolclass=NullPool, connect_args={
            "application_name": name[:63], "keepalives": 1, "keepalives_idle": 20,
            "keepalives_interval": 5, "keepalives_count": 3, "connect_timeout": 10})
        self.conn = None

    def acquire(self) -> bool:
        conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        got = conn.execute(text("SELECT pg_try_advisory_lock(:a, :b)"),
                           {"a": LOCK_CLASS, "b": LOCK_OBJ}).scalar()
        if got:
            self.conn = conn
        else:
            conn.close()
        return bool(got)

    def alive(self) -> bool:
        try:
            self.conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    def release(self) -> None:
        if self.conn is not None:
            try:
                self.conn.execute(text("SELECT pg_advisory_unlock(:a, :b)"),
                                  {"a": LOCK_CLASS, "b": LOCK_OBJ})
                self.conn.close()
            except Exception:  # the connection is gone already: so is the lock
                log.debug("scheduler.unlock_failed", exc_info=True)
            self.conn = None
        self.engine.dispose()


class FileLeaderLock:
    """An exclusive file lock (flock) under instance/: the OS frees it when we die."""

    def __init__(self, path: Path, name: str):
        from filelock import FileLock
        self.lock = FileLock(str(path), thread_local=False)
        self.info = path.with_suffix(".json")
        self.name = name

    def acquire(self) -> bool:
        from filelock import Timeout
        try:
            self.lock.acquire(timeout=0)
        except Timeout:
            return False
        self.info.write_text(json.dumps({"process": self.name, "pid": os.getpid(),
                                         "host": socket.gethostname(),
                                         "since": utcnow().isoformat(timespec="seconds")}))
        return True

    def alive(self) -> bool:
        return self.lock.is_locked

    def release(self) -> None:
        if self.lock.is_locked:
            self.info.unlink(missing_ok=True)
            self.lock.release(force=True)


def lock_path(app: Flask) -> Path:
    uri = app.config["SQLALCHEMY_DATABASE_URI"]
    digest = hashlib.sha1(uri.encode()).hexdigest()[:12]  # noqa: S324 - a file name, not security
    return Path(app.instance_path) / f"scheduler-{digest}.lock"


def make_lock(app: Flask):
    name = f"creditdesk-scheduler {jobruns.host_id()}"
    url = db.engine.url
    if url.get_backend_name() == "postgresql":
        return PgLeaderLock(url, name)
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    return FileLeaderLock(lock_path(app), name)


def leader_info(app: Flask) -> dict | None:
    """Who leads now, seen from any process: the lock holder's connection or lock file.

    Advisory locks are per database, pg_locks is per server: only this database's holder counts
    (another Creditdesk, e.g. staging, on the same server leads its own jobs)."""
    url = db.engine.url
    if url.get_backend_name() == "postgresql":
        row = db.session.execute(text(
            "SELECT a.application_name, a.backend_start, a.client_addr FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
            "AND l.classid = CAST(:a AS oid) AND l.objid = CAST(:b AS oid) AND l.objsubid = 2 "
            "AND l.granted AND l.database = (SELECT oid FROM pg_database "
            "WHERE datname = current_database())"), {"a": LOCK_CLASS, "b": LOCK_OBJ}).first()
        db.session.rollback()
        if row is None:
            return None
        name = (row.application_name or "").removeprefix("creditdesk-scheduler ")
        return {"process": name, "since": naive(row.backend_start) if row.backend_start else None}
    info = lock_path(app).with_suffix(".json")
    try:
        data = json.loads(info.read_text())
    except (OSError, ValueError):
        return None
    if data.get("host") == socket.gethostname():
        try:
            os.kill(int(data["pid"]), 0)
        except (OSError, ValueError, KeyError):
            return None
    since = data.get("since")
    return {"process": f"{data.get('host')}:{data.get('pid')}",
            "since": naive(datetime.fromisoformat(since)) if since else None}
