"""Crash safety: SIGKILL a distribution over 2,000 customers at several points, rerun, and the
ledger equals the one an uninterrupted run leaves: no customer granted twice or missed.

The run is a forked child process that kills itself with SIGKILL at a named checkpoint (the
child sets services/jobs/distribution.py's on_checkpoint hook): inside the expiry pass, after a
chunk committed, inside a chunk's transaction, and just before the run is marked finished.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import uuid

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

import models  # noqa: F401
from bench.distribution import populate, snapshot
from models import db

PERIOD = "2031-07"
CUSTOMERS = 2000


_apps: dict = {}


def _app(url: str):
    """One app per database, built in the test process: forked children inherit it (fast)."""
    if url not in _apps:
        from tests.conftest import build_app
        _apps[url] = build_app(url)
    return _apps[url]


def _kill_at(crash_at: str):
    """chunk:3 | mid-chunk:1 | expiry | before-finish: SIGKILL this process at that checkpoint."""
    point, _, count = crash_at.partition(":")

    def checkpoint(name: str, n: int | None) -> None:
        if name == point and (not count or n is None or int(count) == n):
            os.kill(os.getpid(), signal.SIGKILL)
    return checkpoint


def _child(app, crash_at: str | None, stale: str | None) -> None:
    from services.jobs import distribution

    distribution.on_checkpoint = _kill_at(crash_at) if crash_at else None
    distribution.CHUNK = 500  # several chunks of 2,000 customers, to be killed between and inside
    if stale is not None:
        app.config["JOBS_STALE_SECONDS"] = int(stale)

    with app.app_context():
        db.engine.dispose(close=False)  # never share the parent's connections after fork
        distribution.run(period=PERIOD, trigger="cli")
    os._exit(0)


def _run(url: str, crash_at: str | None = None, stale: str | None = None) -> int:
    app = _app(url)
    with app.app_context():
        db.engine.dispose()
    p = multiprocessing.get_context("fork").Process(target=_child, args=(app, crash_at, stale))
    p.start()
    p.join(120)
    return p.exitcode


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)])
def fresh_db(request, tmp_path):
    """A factory of empty databases with the schema (SQLite files or PostgreSQL databases)."""
    made = []
    pg = os.environ.get("TEST_DATABASE_URL")

    def make(tag: str) -> str:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / f'{tag}.sqlite3'}"
        else:
            base = make_url(pg)
            name = f"{base.database}_crash_{uuid.uuid4().hex[:8]}"
            admin = create_engine(base, isolation_level="AUTOCOMMIT")
            with admin.connect() as c:
                c.execute(text(f'CREATE DATABASE "{name}"'))
            admin.dispose()
            made.append(name)
            url = base.set(database=name).render_as_string(hide_password=False)
        engine = create_engine(url)
        db.metadata.create_all(engine)
        with engine.begin() as conn:
            populate(conn, customers=CUSTOMERS, seed=11)
        engine.dispose()
        return url

    yield make
    for url in list(_apps):
        with _apps.pop(url).app_context():
            db.engine.dispose()
    if made:
        admin = create_engine(make_url(pg), isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            for name in made:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _state(url: str) -> tuple[dict, list, int]:
    engine = create_engine(url)
    with engine.connect() as conn:
        snap = snapshot(conn)
        runs = [tuple(r) for r in conn.execute(text(
            "SELECT job, period, status, users_count, processed_count, error_count FROM job_runs"))]
        grants = conn.execute(text("SELECT COUNT(*) FROM credit_grants "
                                   "WHERE source = 'distribution'")).scalar_one()
    engine.dispose()
    return snap, runs, grants


def _reconciles(url: str) -> bool:
    from services.ledger import reconcile

    with _app(url).app_context():
        ok = reconcile.run().ok
        db.session.remove()
        db.engine.dispose()
    return ok


def test_sigkill_at_several_points_then_rerun_equals_an_uninterrupted_run(fresh_db):
    baseline = fresh_db("baseline")
    assert _run(baseline) == 0
    want, want_runs, eligible = _state(baseline)
    assert want_runs == [("distribute_credits", PERIOD, "succeeded", eligible, eligible, 0)]
    assert 1000 < eligible < CUSTOMERS  # two chunks of work, and some customers get nothing

    # One database, killed again and again: each rerun resumes the same run, killed at the next point.
    url = fresh_db("crashed")
    assert _run(url, crash_at="expiry:1") == -signal.SIGKILL
    assert _state(url)[1:] == ([("distribute_credits", PERIOD, "running", 0, 0, 0)], 0)
    # Straight after a crash its heartbeat is fresh: another run leaves the run alone.
    assert _run(url) == 0
    assert _state(url)[2] == 0
    # Once the heartbeat is stale, the next run takes it over and completes only what is missing.
    assert _run(url, crash_at="chunk:1", stale="0") == -signal.SIGKILL
    after_one = _state(url)[2]
    assert 0 < after_one < eligible
    # Killed inside the next chunk's transaction: that chunk rolls back entirely.
    assert _run(url, crash_at="mid-chunk:1", stale="0") == -signal.SIGKILL
    assert _state(url)[2] == after_one
    assert _run(url, crash_at="before-finish", stale="0") == -signal.SIGKILL
    _snap, runs, granted = _state(url)
    assert granted == eligible and runs[0][2] == "running"
    assert _run(url, stale="0") == 0

    got, got_runs, _ = _state(url)
    assert got_runs == want_runs
    assert got == want  # same entries, balances, grants and allocations, customer by customer
    assert _reconciles(url)
