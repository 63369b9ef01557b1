"""APScheduler 3 in process, active in exactly one process across workers and replicas.

- Started by the app factory (init_app) when SCHEDULER_ENABLED is on, never twice per process, and
  not by CLI commands other than `flask run`.
- Leader election: a PostgreSQL advisory lock held on a dedicated connection (released by the
  server when the leader's process or connection dies), or a file lock under instance/ on SQLite.
  A follower retries every JOBS_LEADER_RETRY_SECONDS (30 s), so it takes over within a minute.
- Only the leader runs a BackgroundScheduler: coalesce=True, misfire grace in minutes, one
  instance per job. On becoming leader it looks back over each job's grace window: a fire time
  whose period has no completed run (the scheduler was down across it) is run once, now.
- Schedules come from the environment (JOBS_<NAME>_CRON, JOBS_<NAME>_MISFIRE_MINUTES); docs/jobs.md.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import sys
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from flask import Flask
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from jobs import JOBS, JobSpec
from models import db
from services.jobs import runs as jobruns

log = logging.getLogger("creditdesk.scheduler")

LOCK_CLASS, LOCK_OBJ = 1128616776, 1  # pg_try_advisory_lock(int4, int4): "CDSH", scheduler
DEFAULT_RETRY = 30.0


# --- configuration ------------------------------------------------------------------------------

def _setting(app: Flask, name: str, default=None):
    if app.config.get(name) not in (None, ""):
        return app.config[name]
    raw = os.environ.get(name)
    return default if raw in (None, "") else raw


def parse_cron(expr: str) -> CronTrigger | None:
    """5 fields: crontab (minute hour day month weekday); 6 fields: seconds first; 'off': disabled."""
    expr = (expr or "").strip()
    if expr.lower() in ("off", "none", "disabled", "0"):
        return None
    parts = expr.split()
    if len(parts) == 5:
        return CronTrigger.from_crontab(expr, timezone=UTC)
    if len(parts) == 6:
        second, minute, hour, day, month, dow = parts
        return CronTrigger(second=second, minute=minute, hour=hour, day=day, month=month,
                           day_of_week=dow, timezone=UTC)
    raise ValueError(f"schedule {expr!r}: expected 5 crontab fields, 6 with seconds, or 'off'")


@dataclass
class Scheduled:
    spec: JobSpec
    cron: str
    trigger: CronTrigger | None
    misfire: timedelta

    @property
    def enabled(self) -> bool:
        return self.trigger is not None

    def next_fire(self, now: datetime) -> datetime | None:
        if not self.trigger:
            return None
        return self.trigger.get_next_fire_time(None, _aware(now))

    def last_fire(self, now: datetime, within: timedelta | None = None) -> datetime | None:
        """The latest fire time <= now, looking back `within` (the misfire grace by default)."""
        if not self.trigger:
            return None
        now = _aware(now)
        t = self.trigger.get_next_fire_time(None, now - (within or self.misfire))
        last = None
        while t is not None and t <= now:
            last = t
            t = self.trigger.get_next_fire_time(t, t + timedelta(seconds=1))
        return last


def schedules(app: Flask) -> dict[str, Scheduled]:
    out = {}
    for name, js in JOBS.items():
        cron = str(_setting(app, f"JOBS_{name.upper()}_CRON", js.cron))
        minutes = int(_setting(app, f"JOBS_{name.upper()}_MISFIRE_MINUTES", js.misfire_minutes))
        out[name] = Scheduled(js, cron, parse_cron(cron), timedelta(minutes=minutes))
    return out


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _naive(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo else t


def _utcnow() -> datetime:
    return datetime.now(UTC)


def missed(sched: Scheduled, now: datetime) -> datetime | None:
    """The fire time within the grace window whose period has no completed (or live) run."""
    t = sched.last_fire(now)
    if t is None:
        return None
    run = jobruns.find(job=sched.spec.name, period=sched.spec.period(_naive(t)))
    db.session.rollback()
    if run is None or run.status == "failed" or jobruns.is_stale(run):  # heartbeats: real time
        return t
    return None


# --- leader locks -------------------------------------------------------------------------------

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
                                         "since": _utcnow().isoformat(timespec="seconds")}))
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


# --- the scheduler --------------------------------------------------------------------------------

class JobScheduler:
    """Leader election loop + a BackgroundScheduler while leader."""

    def __init__(self, app: Flask, *, retry_seconds: float | None = None):
        self.app = app
        self.schedules = schedules(app)
        self.retry = float(retry_seconds or _setting(app, "JOBS_LEADER_RETRY_SECONDS", DEFAULT_RETRY))
        self.lock = None
        self.scheduler: BackgroundScheduler | None = None
        self.is_leader = False
        self.leader_since: datetime | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.fired: list[tuple[str, str]] = []  # (job, period) this process ran, for tests

    # lifecycle
    def start(self) -> JobScheduler:
        with self.app.app_context():
            self.lock = make_lock(self.app)
        self._thread = threading.Thread(target=self._loop, name="scheduler-leader", daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        self._stop.set()
        if self._thread and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        self._step_down()
        if self.lock:
            self.lock.release()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("scheduler.tick_failed")
            self._stop.wait(self.retry)

    def tick(self) -> None:
        """One round of the election loop: try to lead, or check that we still do."""
        if not self.is_leader:
            if self.lock.acquire():
                self._lead()
            return
        if not self.lock.alive():
            log.error("scheduler.leader_lost %s", jobruns.host_id())
            self._step_down()
            return
        self._resume_stale()

    def _lead(self) -> None:
        self.is_leader, self.leader_since = True, _utcnow()
        log.warning("scheduler.leader %s", jobruns.host_id(), extra={"leader": jobruns.host_id()})
        sched = BackgroundScheduler(timezone=UTC, job_defaults={"coalesce": True,
                                                                "max_instances": 1})
        now = _utcnow()
        with self.app.app_context():
            for name, sc in self.schedules.items():
                if not sc.enabled:
                    continue
                due = missed(sc, now)
                kw = {"next_run_time": due} if due else {}
                if due:
                    log.warning("scheduler.catch_up job=%s fire_time=%s", name, due.isoformat())
                sched.add_job(self._fire, sc.trigger, args=[name], id=name, name=sc.spec.title,
                              misfire_grace_time=int(sc.misfire.total_seconds()), coalesce=True,
                              max_instances=1, replace_existing=True, **kw)
            db.session.remove()
        sched.start()
        self.scheduler = sched

    def _step_down(self) -> None:
        if self.scheduler is not None:
            try:
                self.scheduler.shutdown(wait=False)
            except Exception:  # not running
                log.debug("scheduler.shutdown_failed", exc_info=True)
            self.scheduler = None
        if self.is_leader and self.lock:
            self.lock.release()
        self.is_leader = False

    def _fire(self, name: str) -> None:
        sc = self.schedules[name]
        fire = sc.last_fire(_utcnow(), within=sc.misfire + timedelta(minutes=1)) or _utcnow()
        period = sc.spec.period(_naive(fire))
        with self.app.app_context():
            try:
                sc.spec.module.run(period=period, trigger="schedule")
                self.fired.append((name, period))
            except Exception:
                log.exception("scheduler.job_failed job=%s period=%s", name, period)
            finally:
                db.session.remove()

    def _resume_stale(self) -> None:
        """A run whose process died mid-way (stale heartbeat) is resumed by the leader."""
        with self.app.app_context():
            try:
                for r in jobruns.stale_runs():
                    if r.job in JOBS:
                        log.warning("scheduler.resume_stale job=%s period=%s run=%s", r.job,
                                    r.period, r.id)
                        JOBS[r.job].module.run(period=r.period, trigger="resume")
            finally:
                db.session.remove()

    def next_run_times(self) -> dict[str, datetime | None]:
        if self.scheduler is None:
            return {}
        return {j.id: j.next_run_time for j in self.scheduler.get_jobs()}


# --- one per process ------------------------------------------------------------------------------

_guard = threading.Lock()
_instance: JobScheduler | None = None
_pid: int | None = None


def start(app: Flask) -> JobScheduler:
    """Start the scheduler of this process once; a second call returns the running one."""
    global _instance, _pid
    with _guard:
        if _instance is not None and _pid == os.getpid():
            log.info("scheduler.already_started pid=%s", _pid)
            return _instance
        _instance, _pid = JobScheduler(app).start(), os.getpid()
        return _instance


def stop() -> None:
    global _instance, _pid
    with _guard:
        if _instance is not None and _pid == os.getpid():
            _instance.shutdown()
        _instance, _pid = None, None


def current() -> JobScheduler | None:
    return _instance if _pid == os.getpid() else None


def leader_info(app: Flask) -> dict | None:
    """Who leads now, seen from any process: the lock holder's connection or lock file."""
    url = db.engine.url
    if url.get_backend_name() == "postgresql":
        row = db.session.execute(text(
            "SELECT a.application_name, a.backend_start, a.client_addr FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
            "AND l.classid = CAST(:a AS oid) AND l.objid = CAST(:b AS oid) AND l.objsubid = 2 "
            "AND l.granted"), {"a": LOCK_CLASS, "b": LOCK_OBJ}).first()
        db.session.rollback()
        if row is None:
            return None
        name = (row.application_name or "").removeprefix("creditdesk-scheduler ")
        return {"process": name, "since": _naive(row.backend_start) if row.backend_start else None}
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
            "since": _naive(datetime.fromisoformat(since)) if since else None}


def _is_cli_command(app: Flask) -> bool:
    """True inside a flask CLI command other than `run` (db upgrade, run-job...), and in the
    watcher process of `flask run --reload` (only the reloaded child serves and schedules)."""
    ctx = click.get_current_context(silent=True)
    if ctx is None or ctx.info_name is None:
        return False
    if ctx.info_name != "run":
        return True
    reload = ctx.params.get("reload")
    reloading = reload if reload is not None else app.debug
    return bool(reloading) and os.environ.get("WERKZEUG_RUN_MAIN") != "true"


def init_app(app: Flask) -> None:
    from jobs import cli

    cli.init_app(app)
    app.extensions["jobs.schedules"] = schedules(app)
    if enabled(app) and not _is_cli_command(app):
        start(app)


def enabled(app: Flask) -> bool:
    """SCHEDULER_ENABLED; unset, it is on under gunicorn (DESIGN: on for make run and gunicorn)."""
    if app.config.get("SCHEDULER_ENABLED"):
        return True
    unset = os.environ.get("SCHEDULER_ENABLED", "") == ""
    return unset and not app.testing and "gunicorn.arbiter" in sys.modules


def status(app: Flask) -> dict:
    """What the jobs page shows: each job's schedule and next fire time, the leader, this process."""
    now = _utcnow()
    mine = current()
    nexts = mine.next_run_times() if mine else {}
    jobs = []
    for name, sc in schedules(app).items():
        last = jobruns.recent(job=name, limit=1)
        jobs.append({"name": name, "spec": sc.spec, "cron": sc.cron, "enabled": sc.enabled,
                     "misfire_minutes": int(sc.misfire.total_seconds() // 60),
                     "next_fire": _naive(nexts.get(name) or sc.next_fire(now)) if sc.enabled else None,
                     "env": f"JOBS_{name.upper()}_CRON", "last": last[0] if last else None})
    db.session.rollback()
    return {"jobs": jobs, "leader": leader_info(app), "enabled": enabled(app),
            "this_process": jobruns.host_id(),
            "role": "off" if mine is None else "leader" if mine.is_leader else "follower",
            "retry_seconds": float(_setting(app, "JOBS_LEADER_RETRY_SECONDS", DEFAULT_RETRY))}
