"""Each job's schedule: JOBS_<NAME>_CRON and JOBS_<NAME>_MISFIRE_MINUTES over the defaults in
JOBS (docs/jobs.md), cron parsing, fire times, and which fire time was missed while no scheduler ran.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from apscheduler.triggers.cron import CronTrigger
from flask import Flask

from jobs import JOBS
from jobs.spec import JobSpec
from models import db
from services.jobs import runs as jobruns


def setting(app: Flask, name: str, default=None):
    """A job's schedule setting (dashboard/config.py reads them from the environment)."""
    value = app.config.get(name)
    return default if value in (None, "") else value


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
        return self.trigger.get_next_fire_time(None, aware(now))

    def last_fire(self, now: datetime, within: timedelta | None = None) -> datetime | None:
        """The latest fire time <= now, looking back `within` (the misfire grace by default)."""
        if not self.trigger:
            return None
        now = aware(now)
        t = self.trigger.get_next_fire_time(None, now - (within or self.misfire))
        last = None
        while t is not None and t <= now:
            last = t
            t = self.trigger.get_next_fire_time(t, t + timedelta(seconds=1))
        return last


def schedules(app: Flask) -> dict[str, Scheduled]:
    out = {}
    for name, js in JOBS.items():
        cron = str(setting(app, f"JOBS_{name.upper()}_CRON", js.cron))
        minutes = int(setting(app, f"JOBS_{name.upper()}_MISFIRE_MINUTES", js.misfire_minutes))
        out[name] = Scheduled(js, cron, parse_cron(cron), timedelta(minutes=minutes))
    return out


def aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def naive(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo else t


def utcnow() -> datetime:
    return datetime.now(UTC)


def missed(sched: Scheduled, now: datetime) -> datetime | None:
    """The fire time within the grace window whose period has no completed (or live) run."""
    t = sched.last_fire(now)
    if t is None:
        return None
    run = jobruns.find(job=sched.spec.name, period=sched.spec.period(naive(t)))
    db.session.rollback()
    if run is None or run.status == "failed" or jobruns.is_stale(run):  # heartbeats: real time
        return t
    return None
