"""Exactly once across processes: one job_runs row per (job, period), grants = eligible customers."""
from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bench.distribution import populate
from jobs import JOBS
from models import CreditGrant, JobRun, db
from services.jobs import distribution
from services.ledger import reconcile

ROOT = Path(__file__).resolve().parents[2]


def _eligible(period: str) -> int:
    return distribution.preview(period=period, limit=0).users_count


def _child(app, period: str, go, out) -> None:
    code = 0
    try:
        with app.app_context():
            db.engine.dispose(close=False)  # fresh connections in this process
            go.wait(30)
            r = distribution.run(period=period, trigger="cron")
            out.put((os.getpid(), r.run_id, r.already_done))
    except BaseException as err:  # reported to the test
        out.put((os.getpid(), None, f"{type(err).__name__}: {err}"))
        code = 1
    out.close()
    out.join_thread()  # flush the queue's feeder thread: os._exit would drop what it holds
    os._exit(code)


def test_four_processes_triggering_at_once_make_one_run(app):
    with db.engine.begin() as conn:
        populate(conn, customers=400, seed=3)
    period = "2031-09"
    eligible = _eligible(period)
    db.engine.dispose()
    ctx = multiprocessing.get_context("fork")
    go, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_child, args=(app, period, go, out)) for _ in range(4)]
    for p in procs:
        p.start()
    go.set()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len({run_id for _, run_id, _ in results}) == 1
    assert sorted(done for _, _, done in results) == [False, True, True, True]
    runs = db.session.scalars(select(JobRun)).all()
    assert [(r.job, r.period, r.status, r.processed_count) for r in runs] == \
        [("distribute_credits", period, "succeeded", eligible)]
    assert db.session.scalar(select(func.count(func.distinct(CreditGrant.customer_id))).where(
        CreditGrant.period == period)) == eligible
    assert db.session.scalar(select(func.count(CreditGrant.id)).where(
        CreditGrant.period == period)) == eligible
    assert reconcile.run().ok


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.25)
    return False


@pytest.mark.pg
@pytest.mark.slow  # boots four gunicorn workers and waits for a fire time
def test_two_gunicorn_instances_with_the_scheduler_on_run_the_distribution_once(pg_app, tmp_path):
    with db.engine.begin() as conn:
        populate(conn, customers=500, seed=5)
    fire = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=20)
    period = fire.strftime("%Y-%m")
    eligible = _eligible(period)
    db.session.remove()
    url = db.engine.url.render_as_string(hide_password=False)
    env = {**os.environ, "DATABASE_URL": url, "SCHEDULER_ENABLED": "1", "LOG_JSON": "0",
           "LOG_LEVEL": "INFO", "SECRET_KEY": "exactly-once-test", "SESSION_COOKIE_SECURE": "0",
           "JOBS_LEADER_RETRY_SECONDS": "1",
           **{f"JOBS_{name.upper()}_CRON": "off" for name in JOBS},
           "JOBS_DISTRIBUTE_CREDITS_CRON": f"{fire.second} {fire.minute} {fire.hour} * * *"}
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    logs, procs = [], []
    try:
        for k in range(2):
            log = tmp_path / f"gunicorn{k}.log"
            logs.append(log)
            procs.append(subprocess.Popen(
                [gunicorn, "-w", "2", "-b", f"127.0.0.1:{_free_port()}", "--timeout", "120",
                 "wsgi:app"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                stderr=log.open("w"), start_new_session=True))

        def finished() -> bool:
            db.session.rollback()
            return db.session.scalar(select(func.count(JobRun.id)).where(
                JobRun.status == "succeeded")) == 1

        assert _wait(finished, timeout=180), "the distribution did not run"
        # Every worker has booted (4 schedulers started), and only one of them ever led.
        assert _wait(lambda: sum(p.read_text().count("Booting worker") for p in logs) == 4, 60)
        assert _wait(lambda: sum(p.read_text().count("scheduler.") for p in logs) >= 1, 30)
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            p.wait(60)
    text_ = "".join(p.read_text() for p in logs)
    assert text_.count("scheduler.leader ") == 1, text_[-3000:]
    assert text_.count("distribution.starting") == 1
    runs = db.session.scalars(select(JobRun)).all()
    assert [(r.job, r.period, r.trigger, r.processed_count) for r in runs] == \
        [("distribute_credits", period, "schedule", eligible)]
    assert db.session.scalar(select(func.count(CreditGrant.id)).where(
        CreditGrant.period == period, CreditGrant.source == "distribution")) == eligible
    assert reconcile.run().ok
