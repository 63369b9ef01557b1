"""APScheduler 3 in process, active in exactly one process across workers and replicas.

- Started by the app factory (init_app) when SCHEDULER_ENABLED is on, never twice per process, and
  not by CLI commands other than `flask run`.
- Leader election: a PostgreSQL advisory lock held on a dedicated connection (released by the
  server when the leader's process or connection dies), or a file lock under instance/ on SQLite.
  A follower retries every JOBS_LEADER_RETRY_SECONDS (30 s), so it takes over within a minute.
- Only the leader runs a BackgroundScheduler: coalesce=True, misfire grace in minutes, one
  instance per job. On becoming leader it looks back over each job's grace window: a fire time
  whose period has no completed run (the scheduler was down across it) is run once, now.
- Schedules come from the environment (jobs/schedules.py, docs/jobs.md); the lock is jobs/leader.py.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
from datetime import UTC, datetime, timedelta

import click
from apscheduler.schedulers.background import BackgroundScheduler
from flask import Flask

from jobs import JOBS
from jobs.leader import leader_info, make_lock
from jobs.schedules import missed, naive, schedules, setting, utcnow
from models import db
from services.jobs import runs as jobruns

log = logging.getLogger("creditdesk.scheduler")

DEFAULT_RETRY = 30.0


# --- the scheduler --------------------------------------------------------------------------------

class JobScheduler:
    """Leader election loop + a BackgroundScheduler while leader."""

    def __init__(self, app: Flask, *, retry_seconds: float | None = None):
        self.app = app
        self.schedules = schedules(app)
        self.retry = float(retry_seconds or setting(app, "JOBS_LEADER_RETRY_SECONDS", DEFAULT_RETRY))
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
        self.is_leader, self.leader_since = True, utcnow()
        log.warning("scheduler.leader %s", jobruns.host_id(), extra={"leader": jobruns.host_id()})
        sched = BackgroundScheduler(timezone=UTC, job_defaults={"coalesce": True,
                                                                "max_instances": 1})
        now = utcnow()
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
        fire = sc.last_fire(utcnow(), within=sc.misfire + timedelta(minutes=1)) or utcnow()
        period = sc.spec.period(naive(fire))
        with self.app.app_context():
            try:
                sc.spec.run(period=period, trigger="schedule")
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
                        JOBS[r.job].run(period=r.period, trigger="resume")
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
    # Werkzeug's reloader sets this in the child it spawns: a fact about this process, read now,
    # not a setting.
    return bool(reloading) and os.environ.get("WERKZEUG_RUN_MAIN") != "true"


def init_app(app: Flask) -> None:
    from jobs import cli

    cli.init_app(app)
    app.extensions["jobs.schedules"] = schedules(app)
    if enabled(app) and not _is_cli_command(app):
        start(app)


def enabled(app: Flask) -> bool:
    """SCHEDULER_ENABLED; unset, it is on under gunicorn (DESIGN: on for make run and gunicorn)."""
    setting = app.config.get("SCHEDULER_ENABLED")
    if setting:
        return True
    return setting is None and not app.testing and "gunicorn.arbiter" in sys.modules


def status(app: Flask) -> dict:
    """What the jobs page shows: each job's schedule and next fire time, the leader, this process."""
    now = utcnow()
    mine = current()
    nexts = mine.next_run_times() if mine else {}
    jobs = []
    for name, sc in schedules(app).items():
        last = jobruns.recent(job=name, limit=1)
        jobs.append({"name": name, "spec": sc.spec, "cron": sc.cron, "enabled": sc.enabled,
                     "misfire_minutes": int(sc.misfire.total_seconds() // 60),
                     "next_fire": naive(nexts.get(name) or sc.next_fire(now)) if sc.enabled else None,
                     "env": f"JOBS_{name.upper()}_CRON", "last": last[0] if last else None})
    db.session.rollback()
    return {"jobs": jobs, "leader": leader_info(app), "enabled": enabled(app),
            "this_process": jobruns.host_id(),
            "role": "off" if mine is None else "leader" if mine.is_leader else "follower",
            "retry_seconds": float(setting(app, "JOBS_LEADER_RETRY_SECONDS", DEFAULT_RETRY))}
