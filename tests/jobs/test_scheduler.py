"""Scheduler wiring: schedules from the environment, misfire catch-up, leader election, once per process."""
from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from jobs import JOBS, leader, scheduler, schedules
from models import JobRun, db
from services.jobs import runs as jobruns
from tests.conftest import build_app


def _sched(app, name="distribute_credits", cron=None, minutes=None):
    if cron:
        app.config[f"JOBS_{name.upper()}_CRON"] = cron
    if minutes is not None:
        app.config[f"JOBS_{name.upper()}_MISFIRE_MINUTES"] = minutes
    return schedules.schedules(app)[name]


def test_schedules_parse_crontab_seconds_and_off(app):
    assert str(schedules.parse_cron("5 0 1 * *")).startswith("cron[")
    six = schedules.parse_cron("30 5 0 1 * *")
    assert six.get_next_fire_time(None, datetime(2031, 1, 1, tzinfo=UTC)) == \
        datetime(2031, 1, 1, 0, 5, 30, tzinfo=UTC)
    assert schedules.parse_cron("off") is None
    with pytest.raises(ValueError):
        schedules.parse_cron("every day")
    sc = _sched(app, "recover_timeouts", cron="off")
    assert not sc.enabled and sc.next_fire(datetime(2031, 1, 1)) is None
    assert _sched(app).misfire == timedelta(minutes=JOBS["distribute_credits"].misfire_minutes)


def test_missed_fire_with_a_controllable_clock(app):
    """Down across 00:05 on the 1st: the first leader after it runs that period once, not twice."""
    sc = _sched(app, minutes=60)
    before = datetime(2031, 5, 1, 0, 4, tzinfo=UTC)
    after = datetime(2031, 5, 1, 0, 40, tzinfo=UTC)
    too_late = datetime(2031, 5, 1, 1, 10, tzinfo=UTC)
    fire = datetime(2031, 5, 1, 0, 5, tzinfo=UTC)
    assert sc.next_fire(before) == fire
    assert schedules.missed(sc, before) is None            # nothing missed yet
    assert schedules.missed(sc, after) == fire             # missed, within the grace: run once
    assert schedules.missed(sc, too_late) is None          # past the grace: wait for the next fire
    run = jobruns.claim(job="distribute_credits", period="2031-05")
    assert schedules.missed(sc, after) is None             # running (fresh heartbeat): leave it
    jobruns.finish(run_id=run.run_id)
    assert schedules.missed(sc, after) is None             # done: nothing to catch up
    # An every-minute job down for 10 minutes misses ten fires; coalesced, it catches up once.
    sm = _sched(app, "recover_timeouts", minutes=15)
    now = datetime(2031, 5, 1, 0, 40, 30, tzinfo=UTC)
    assert schedules.missed(sm, now) == datetime(2031, 5, 1, 0, 40, tzinfo=UTC)


def _wait(cond, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        db.session.rollback()
        if cond():
            return True
        time.sleep(0.1)
    return False


def test_misfire_runs_exactly_once_after_restart(app, make):
    """The fire time passed two minutes ago while no scheduler ran: one run on start, none on restart."""
    customers = [make.customer() for _ in range(3)]
    fire = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2)
    cron = f"{fire.second} {fire.minute} {fire.hour} * * *"
    for name in JOBS:
        app.config[f"JOBS_{name.upper()}_CRON"] = "off"
    _sched(app, cron=cron, minutes=10)
    period = fire.strftime("%Y-%m")

    first = scheduler.JobScheduler(app, retry_seconds=3600)
    first.lock = leader.make_lock(app)
    try:
        first.tick()
        assert first.is_leader
        job = first.scheduler.get_job("distribute_credits")
        assert job.coalesce is True and job.misfire_grace_time == 600
        assert _wait(lambda: db.session.scalar(select(func.count(JobRun.id)).where(
            JobRun.status == "succeeded")) == 1)
        assert _wait(lambda: first.fired == [("distribute_credits", period)])
    finally:
        first.shutdown()

    second = scheduler.JobScheduler(app, retry_seconds=3600)
    second.lock = leader.make_lock(app)
    try:
        second.tick()
        assert second.is_leader
        # Nothing is due: the next fire is tomorrow's, and the period has its run.
        nxt = second.scheduler.get_job("distribute_credits").next_run_time
        assert nxt > datetime.now(UTC) + timedelta(hours=23)
    finally:
        second.shutdown()
    runs = db.session.scalars(select(JobRun)).all()
    assert [(r.job, r.period, r.processed_count) for r in runs] == [("distribute_credits", period, 3)]
    assert len(customers) == 3


def test_one_leader_at_a_time_and_takeover_when_it_stops(app):
    a = scheduler.JobScheduler(app, retry_seconds=3600)
    b = scheduler.JobScheduler(app, retry_seconds=3600)
    for s in (a, b):
        for name in JOBS:
            app.config[f"JOBS_{name.upper()}_CRON"] = "off"
        s.schedules = schedules.schedules(app)
        s.lock = leader.make_lock(app)
    try:
        a.tick()
        b.tick()
        assert (a.is_leader, b.is_leader) == (True, False)
        info = leader.leader_info(app)
        assert info is not None and info["process"] == jobruns.host_id()
        a.shutdown()
        b.tick()
        assert b.is_leader
    finally:
        a.shutdown()
        b.shutdown()
    assert leader.leader_info(app) is None


@pytest.mark.pg
def test_a_leader_of_another_database_on_the_same_server_is_not_ours(pg_app):
    """Advisory locks are per database but pg_locks lists the whole server: a staging
    Creditdesk's scheduler on the same PostgreSQL must not show as this one's leader."""
    from tests.conftest import PG_URL

    other = leader.PgLeaderLock(PG_URL, "creditdesk-scheduler other-db:1")  # the base database
    assert other.acquire()
    try:
        assert leader.leader_info(pg_app) is None
        ours = leader.make_lock(pg_app)
        assert ours.acquire()  # a lock of its own: the other database's does not block it
        try:
            assert leader.leader_info(pg_app)["process"] == jobruns.host_id()
        finally:
            ours.release()
    finally:
        other.release()


def test_follower_takes_over_when_the_leader_process_is_killed(pg_app):
    """A leader in another process holds the advisory lock; SIGKILL it, the follower leads."""
    url = db.engine.url.render_as_string(hide_password=False).replace("+psycopg", "")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import psycopg, sys, time\n"
        f"c = psycopg.connect({url!r}, autocommit=True)\n"
        f"assert c.execute('SELECT pg_try_advisory_lock({leader.LOCK_CLASS}, "
        f"{leader.LOCK_OBJ})').fetchone()[0]\n"
        "print('held', flush=True)\n"
        "time.sleep(600)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        follower = scheduler.JobScheduler(pg_app, retry_seconds=3600)
        for name in JOBS:
            pg_app.config[f"JOBS_{name.upper()}_CRON"] = "off"
        follower.schedules = schedules.schedules(pg_app)
        follower.lock = leader.make_lock(pg_app)
        follower.tick()
        assert not follower.is_leader
        assert leader.leader_info(pg_app) is not None  # the other process leads
        holder.kill()
        holder.wait()

        def takes_over():
            follower.tick()
            return follower.is_leader

        assert _wait(takes_over, timeout=20)
        assert leader.leader_info(pg_app)["process"] == jobruns.host_id()
        follower.shutdown()
    finally:
        holder.kill()
        holder.wait()


def test_started_once_per_process_and_only_when_enabled(db_url, tmp_path):
    off = build_app(db_url)
    assert scheduler.current() is None and "run-job" in off.cli.commands
    env = {f"JOBS_{n.upper()}_CRON": "off" for n in JOBS}
    one = build_app(db_url, SCHEDULER_ENABLED=True, **env)
    try:
        first = scheduler.current()
        assert first is not None
        two = build_app(db_url, SCHEDULER_ENABLED=True, **env)
        assert scheduler.current() is first and scheduler.start(two) is first
    finally:
        scheduler.stop()
    assert scheduler.current() is None
    with one.app_context():
        db.engine.dispose()
