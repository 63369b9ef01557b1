"""What bench/export.py and bench/analytics.py share: a throw-away PostgreSQL database with a
realistic ledger, a gunicorn server signed in as finance staff, and its workers' peak memory.

Nothing here asserts a time: the scripts print what they measured.
"""
from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from bench import common  # noqa: E402

SECRET = "bench-secret-key-not-for-production"  # noqa: S105 - a throw-away bench database
PASSWORD = "bench finance password"  # noqa: S105
EMAIL = "finance@bench.test"


def base_url() -> str:
    """The server on which a fresh database is created (when BENCH_DATABASE_URL is unset)."""
    return "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def make_app(url: str):
    from dashboard import create_app
    return create_app({"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": SECRET, "LOG_JSON": False,
                       "LOG_LEVEL": "WARNING", "SCHEDULER_ENABLED": False})


def _load(url: str, entries: int) -> None:
    """Migrate like production (`flask db upgrade`), load the ledger, add the finance user."""
    from flask_migrate import upgrade

    from bench import ledger_data
    from models import LedgerEntry, Staff, db
    from services.staff import accounts as staff

    app = make_app(url)
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))
        have = db.session.query(LedgerEntry).count()
        if have:
            print(f"  using the {have:,} ledger entries already in the database")
        else:
            t0 = time.perf_counter()
            counts = ledger_data.realistic(db.session, entries=entries)
            print(f"  loaded {counts['entries']:,} entries, {counts['allocations']:,} allocations, "
                  f"{counts['customers']:,} customers, {counts['payments']:,} payments "
                  f"in {time.perf_counter() - t0:.0f} s")
        if db.session.query(Staff).filter_by(email=EMAIL).first() is None:
            staff.create(email=EMAIL, role="finance", password=PASSWORD, name="Bench Finance")
        db.session.remove()
        db.engine.dispose()
    with create_engine(url, isolation_level="AUTOCOMMIT").connect() as c:
        c.execute(text("VACUUM ANALYZE"))


@contextlib.contextmanager
def database(label: str, *, entries: int, keep: bool = False):
    """The database to measure: BENCH_DATABASE_URL when set (used as it is when it holds a
    ledger already, loaded otherwise; never dropped), else a fresh database on the local server,
    loaded with about `entries` entries (bench.ledger_data.realistic) and dropped afterwards."""
    given = os.environ.get("BENCH_DATABASE_URL")
    if given:
        _load(given, entries)
        yield given
        return
    with common.fresh_database(label, lambda url: _load(url, entries), base_url=base_url(),
                               keep=keep, indent="  ") as url:
        yield url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """gunicorn (one sync worker, the production server) on 127.0.0.1, signed in as finance."""

    def __init__(self, url: str, *, workers: int = 1):
        self.port = free_port()
        self.log = Path(tempfile.gettempdir()) / f"bench-gunicorn-{self.port}.log"
        env = {**os.environ, "DATABASE_URL": url, "SECRET_KEY": SECRET, "SCHEDULER_ENABLED": "0",
               "SESSION_COOKIE_SECURE": "0", "LOG_LEVEL": "WARNING", "LOG_JSON": "0"}
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"), "-w", str(workers), "-b",
             f"127.0.0.1:{self.port}", "--timeout", "900", "wsgi:app"],
            cwd=ROOT, env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT)
        self.http = requests.Session()
        deadline = time.time() + 60
        while True:
            try:
                if self.http.get(f"{self.base}/login", timeout=30).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.time() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn did not start; see {self.log}")
            time.sleep(0.3)
        page = self.http.get(f"{self.base}/login").text
        token = (re.search(r'name="csrf-token" content="([^"]+)"', page)
                 or re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)).group(1)
        resp = self.http.post(f"{self.base}/login", data={"email": EMAIL, "password": PASSWORD,
                                                          "csrf_token": token}, allow_redirects=False)
        assert resp.status_code == 302, resp.text[:300]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def workers(self) -> list[int]:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        return [int(p) for p in children]

    def _largest_mb(self, key: str) -> float:
        """The largest `key` line of /proc/PID/status (VmHWM, VmRSS) among the workers, in MB."""
        kb = 0
        for pid in self.workers():
            status = Path(f"/proc/{pid}/status").read_text()
            kb = max(kb, int(re.search(rf"{key}:\s+(\d+) kB", status).group(1)))
        return kb / 1024

    def peak_rss_mb(self) -> float:
        """The largest VmHWM (peak resident set) among the workers, in MB."""
        return self._largest_mb("VmHWM")

    def reset_peak(self) -> None:
        """Start each worker's VmHWM afresh (Linux: 5 > /proc/PID/clear_refs)."""
        for pid in self.workers():
            Path(f"/proc/{pid}/clear_refs").write_text("5")

    def rss_mb(self) -> float:
        return self._largest_mb("VmRSS")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]
