"""Shared pieces of the benchmarks: a throw-away PostgreSQL database, consistent bulk data,
gunicorn started and measured, load from a separate process (wrk, or a Python generator), pgbench,
and the figure table.

Nothing here asserts a time: the scripts print what they measured.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

BASE_URL = os.environ.get("BENCH_DATABASE_URL",
                          "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
VENV_BIN = Path(sys.executable).parent
SECRET = "bench-secret-key-not-for-production"  # noqa: S105 - a throw-away bench server


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def libpq(url: str) -> str:
    """A SQLAlchemy URL as the postgresql:// string libpq tools (psycopg, pgbench) take."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


# --- the database ---------------------------------------------------------------------------------

@contextlib.contextmanager
def database(label: str, *, keep: bool = False):
    """A fresh PostgreSQL database with the schema of `flask db upgrade`; dropped afterwards."""
    with fresh_database(label, migrate, keep=keep) as url:
        yield url


@contextlib.contextmanager
def fresh_database(label: str, prepare, *, base_url: str = BASE_URL, keep: bool = False,
                   indent: str = ""):
    """A new database on the server of `base_url`, prepare(url) run on it; dropped afterwards
    unless `keep`."""
    base = make_url(base_url)
    name = f"bench_{label}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = base.set(database=name).render_as_string(hide_password=False)
    try:
        prepare(url)
        yield url
    finally:
        if keep:
            print(f"{indent}kept database {name}")
        else:
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def make_app(url: str, **extra):
    from dashboard import create_app

    return create_app({"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": SECRET, "LOG_JSON": False,
                       "LOG_LEVEL": "WARNING", "SCHEDULER_ENABLED": False, **extra})


def migrate(url: str) -> None:
    """The production schema: every migration, as `flask db upgrade` runs them."""
    import logging

    from flask_migrate import upgrade

    logging.getLogger("alembic").setLevel(logging.WARNING)
    app = make_app(url)
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))
        from models import db

        db.session.remove()
        db.engine.dispose()


def analyze(url: str) -> None:
    with create_engine(url, isolation_level="AUTOCOMMIT").connect() as c:
        c.execute(text("VACUUM ANALYZE"))


# --- consistent bulk data -------------------------------------------------------------------------

def load_customers(url: str, *, customers: int, credits: int, start_id: int = 1,
                   prefix: str = "bench") -> list[str]:
    """`customers` customers, each with one promotional grant of `credits` (expiring in a year),
    its grant entry and allocation; balances and versions match. COPY through psycopg.

    Returns the external ids. Consistent with every invariant `flask reconcile` checks.
    """
    import psycopg

    at = now() - timedelta(days=1)
    expires = at + timedelta(days=366)
    ids = range(start_id, start_id + customers)
    ext = [f"{prefix}_{i}" for i in ids]
    with psycopg.connect(libpq(url)) as conn, conn.cursor() as cur:
        def copy(table: str, cols: str, rows):
            with cur.copy(f"COPY {table} ({cols}) FROM STDIN") as cp:
                for r in rows:
                    cp.write_row(r)

        copy("customers", "id, external_id, email, name, subscription_status, created_at, updated_at",
             ((i, e, f"{e}@bench.test", f"Bench {i}", "none", at, at) for i, e in zip(ids, ext, strict=True)))
        copy("accounts", "id, customer_id, balance, version, updated_at",
             ((i, i, credits, 1, at) for i in ids))
        copy("credit_grants", "id, account_id, customer_id, source, amount, remaining, expires_at, "
             "cost_minor, created_at", ((i, i, i, "promo", credits, credits, expires, 0, at) for i in ids))
        copy("ledger_entries", "id, account_id, customer_id, type, amount, balance_before, balance_after, "
             "actor_type, reason, grant_id, idempotency_key, request_hash, created_at",
             ((i, i, i, "grant", credits, 0, credits, "system", "bench credits", i, f"bench-grant:{i}",
               "0" * 64, at) for i in ids))
        copy("allocations", "id, entry_id, grant_id, credits", ((i, i, i, credits) for i in ids))
        for table in ("customers", "accounts", "credit_grants", "ledger_entries", "allocations"):
            cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"(SELECT COALESCE(MAX(id), 1) FROM {table}))")
    return ext


def feature_prices(url: str) -> None:
    app = make_app(url)
    with app.app_context():
        from models import FeaturePrice, db
        from services.demo.dataset import FEATURES

        for f, label, unit, cpu, cost, _w in FEATURES:
            db.session.add(FeaturePrice(feature=f, label=label, unit=unit, credits_per_unit=cpu,
                                        provider_cost_micros=cost, currency="USD"))
        db.session.commit()
        db.session.remove()
        db.engine.dispose()


def api_key(url: str) -> str:
    """A fresh API key with every scope; the plain key."""
    app = make_app(url)
    with app.app_context():
        from models import db
        from services.staff import accounts as staff

        _, plain = staff.create_api_key(name=f"bench {uuid.uuid4().hex[:6]}")
        db.session.remove()
        db.engine.dispose()
    return plain


def reconcile(url: str) -> bool:
    """Run services.ledger.reconcile over the database; prints a line; True when consistent."""
    app = make_app(url)
    with app.app_context():
        from models import db
        from services.ledger import reconcile as rec

        report = rec.run()
        print(f"  reconcile: {report.lines()[0]} {'consistent' if report.ok else 'VIOLATIONS'}")
        if not report.ok:
            print("\n".join(report.lines()))
        db.session.remove()
        db.engine.dispose()
    return report.ok


# --- gunicorn -------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A gunicorn master on 127.0.0.1; `peak_rss_mb()` reads each worker's VmHWM."""

    proc: subprocess.Popen
    port: int
    log: Path
    workers: list[int] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def worker_pids(self) -> list[int]:
        try:
            kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        except OSError:
            return []
        return [int(k) for k in kids]

    def peak_rss_mb(self) -> list[float]:
        out = []
        for pid in self.worker_pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        out.append(int(line.split()[1]) / 1024)
            except OSError:
                continue
        return out


REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_answers() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(REDIS_URL, socket_timeout=0.5).ping())
    except Exception:  # noqa: BLE001 - no Redis: the limiter counts in memory
        return False


@contextlib.contextmanager
def gunicorn(app: str, *, url: str, workers: int = 3, worker_class: str = "gthread",
             threads: int = 3, env: dict | None = None, ready_path: str = "/api/health"):
    """Start `gunicorn app` with DATABASE_URL=url; yield a Server once it answers; stop it."""
    port = free_port()
    logdir = Path(tempfile.mkdtemp(prefix="creditdesk-bench-"))
    log = logdir / "gunicorn.log"
    cmd = [str(VENV_BIN / "gunicorn"), app, "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
           "--worker-class", worker_class, "--chdir", str(ROOT), "--log-level", "warning",
           "--keep-alive", "30", "--backlog", "256"]
    if worker_class == "gthread":
        cmd += ["--threads", str(threads)]
    full_env = {**os.environ, "DATABASE_URL": url, "SECRET_KEY": SECRET, "SCHEDULER_ENABLED": "0",
                "LOG_LEVEL": "INFO", "LOG_JSON": "1",
                # The shipped rate limits (keys unthrottled, 600 a minute per customer), counted
                # where production counts them: in Redis when it answers (as `make run` does).
                **({"REDIS_URL": REDIS_URL, "RATELIMIT_KEY_PREFIX": f"bench-{port}"}
                   if redis_answers() else {}),
                "SESSION_COOKIE_SECURE": "0", "PYTHONPATH": str(ROOT), **(env or {})}
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env,
                                cwd=ROOT, start_new_session=True)
    server = Server(proc, port, log)
    try:
        _wait_ready(server, ready_path)
        server.workers = server.worker_pids()
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(logdir, ignore_errors=True)


def _wait_ready(server: Server, path: str, timeout: float = 60) -> None:
    import http.client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited:\n{server.log.read_text()[-3000:]}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=2)
            c.request("GET", path)
            if c.getresponse().status < 500 and server.worker_pids():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"gunicorn did not answer:\n{server.log.read_text()[-3000:]}")


def warm(server: Server, path: str = "/api/health", n: int = 50) -> None:
    """A few requests on fresh connections so every worker has imported and connected."""
    import http.client

    for _ in range(n):
        c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        c.request("GET", path)
        c.getresponse().read()
        c.close()


# --- load -----------------------------------------------------------------------------------------

@dataclass
class Figure:
    """One line of the table."""

    name: str
    requests: int = 0
    seconds: float = 0.0
    errors: int = 0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    items_per_request: int = 1
    rss_mb: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def per_second(self) -> float:
        """Debits (items) per second."""
        return self.rps * self.items_per_request


@dataclass
class Load:
    """What each request of a run is: a generator spec both wrk (Lua) and Python understand.

    kind: "debit" (one customer per request, unique Idempotency-Key), "batch" (`batch` items of
    random customers, unique keys), "baseline" (the bare Flask endpoint), "get" (paths in turn).
    """

    kind: str
    api_key: str = ""
    customers: list[str] = field(default_factory=list)  # external ids (or ids for baseline)
    hot: str | None = None
    batch: int = 0
    feature: str = "chat"
    paths: list[str] = field(default_factory=list)
    headers: dict = field(default_factory=dict)


def run_load(server: Server, load: Load, *, name: str, clients: int, seconds: float,
             warmup: float = 2.0, engine: str | None = None) -> Figure:
    """Warm up, then drive the server with `clients` keep-alive connections for `seconds`."""
    engine = engine or ("wrk" if shutil.which("wrk") else "python")
    runner = _wrk if engine == "wrk" else _python_load
    if warmup:
        runner(server, load, clients=clients, seconds=warmup)
    fig = runner(server, load, clients=clients, seconds=seconds)
    fig.name = name
    fig.items_per_request = max(1, load.batch)
    fig.rss_mb = server.peak_rss_mb()
    fig.note = f"{clients} clients, {engine}"
    return fig


LUA = r"""
local KEY = %(key)s
local CUSTOMERS = {%(customers)s}
local HOT = %(hot)s
local KIND = %(kind)s
local BATCH = %(batch)d
local FEATURE = %(feature)s
local NONCE = %(nonce)s
local n = 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  math.randomseed(os.time() * 1000 + tid)
end

local function customer()
  if HOT ~= "" then return HOT end
  return CUSTOMERS[math.random(#CUSTOMERS)]
end

function request()
  n = n + 1
  local key = NONCE .. "-" .. tid .. "-" .. n
  if KIND == "debit" then
    return wrk.format("POST", "/api/v1/customers/" .. customer() .. "/debits",
      {["Authorization"] = "Bearer " .. KEY, ["Content-Type"] = "application/json",
       ["Idempotency-Key"] = key},
      '{"feature":"' .. FEATURE .. '","quantity":1}')
  elseif KIND == "baseline" then
    return wrk.format("POST", "/debit/" .. customer(),
      {["Content-Type"] = "application/json"}, '{"credits":1,"key":"' .. key .. '"}')
  else
    local items = {}
    for i = 1, BATCH do
      items[i] = '{"customer":"' .. customer() .. '","feature":"' .. FEATURE ..
        '","quantity":1,"idempotency_key":"' .. key .. "-" .. i .. '"}'
    end
    return wrk.format("POST", "/api/v1/debits/batch",
      {["Authorization"] = "Bearer " .. KEY, ["Content-Type"] = "application/json",
       ["Idempotency-Key"] = key},
      '{"debits":[' .. table.concat(items, ",") .. ']}')
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%%d,"duration_us":%%d,"errors":%%d,"p50":%%d,"p95":%%d,"p99":%%d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""


def _lua_str(s: str) -> str:
    return json.dumps(s)  # a JSON string is a valid Lua string for our ASCII ids


def _wrk(server: Server, load: Load, *, clients: int, seconds: float) -> Figure:
    if load.kind == "get":
        raise ValueError("GET pages are measured by the Python client")
    script = LUA % {"key": _lua_str(load.api_key), "kind": _lua_str(load.kind),
                    "customers": ",".join(_lua_str(c) for c in load.customers),
                    "hot": _lua_str(load.hot or ""), "batch": load.batch,
                    "feature": _lua_str(load.feature), "nonce": _lua_str(uuid.uuid4().hex[:10])}
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    try:
        threads = max(1, min(2, clients))
        duration = f"{max(1, round(seconds))}s"
        out = subprocess.run(["wrk", "-t", str(threads), "-c", str(clients), "-d", duration,
                              "--timeout", "30s", "-s", f.name, server.base],
                             capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(f.name)
    line = next(ln for ln in out.splitlines() if ln.startswith("WRKJSON "))
    d = json.loads(line[len("WRKJSON "):])
    return Figure(name="", requests=d["requests"], seconds=d["duration_us"] / 1e6, errors=d["errors"],
                  p50_ms=d["p50"] / 1000, p95_ms=d["p95"] / 1000, p99_ms=d["p99"] / 1000)


def _python_load(server: Server, load: Load, *, clients: int, seconds: float) -> Figure:
    """The same load from `python bench/common.py loadgen` (a separate process)."""
    spec = {"port": server.port, "clients": clients, "seconds": seconds, "load": load.__dict__}
    out = subprocess.run([sys.executable, str(Path(__file__)), "loadgen"], input=json.dumps(spec),
                         capture_output=True, text=True, check=True).stdout
    d = json.loads(out.strip().splitlines()[-1])
    return Figure(name="", requests=d["requests"], seconds=d["seconds"], errors=d["errors"],
                  p50_ms=d["p50"], p95_ms=d["p95"], p99_ms=d["p99"])


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))
    return s[k]


def _requests_of(load: dict, nonce: str, cid: int):
    """An endless iterator of raw HTTP/1.1 requests for one client."""
    rng = random.Random(f"{nonce}-{cid}")
    n = 0
    auth = f"Authorization: Bearer {load['api_key']}\r\n" if load.get("api_key") else ""
    extra = "".join(f"{k}: {v}\r\n" for k, v in (load.get("headers") or {}).items())

    def customer():
        return load["hot"] or rng.choice(load["customers"])

    while True:
        n += 1
        key = f"{nonce}-{cid}-{n}"
        kind = load["kind"]
        if kind == "get":
            path = load["paths"][n % len(load["paths"])]
            yield (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n").encode()
            continue
        if kind == "debit":
            path, hdr = f"/api/v1/customers/{customer()}/debits", f"{auth}Idempotency-Key: {key}\r\n"
            body = json.dumps({"feature": load["feature"], "quantity": 1})
        elif kind == "baseline":
            path, hdr = f"/debit/{customer()}", ""
            body = json.dumps({"credits": 1, "key": key})
        else:
            path, hdr = "/api/v1/debits/batch", f"{auth}Idempotency-Key: {key}\r\n"
            body = json.dumps({"debits": [{"customer": customer(), "feature": load["feature"],
                                           "quantity": 1, "idempotency_key": f"{key}-{i}"}
                                          for i in range(load["batch"])]})
        raw = body.encode()
        yield (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{hdr}{extra}Content-Type: application/json\r\n"
               f"Content-Length: {len(raw)}\r\n\r\n").encode() + raw


async def _client(port: int, reqs, stop_at: float, lat: list, errs: list, timing: list) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            writer.write(next(reqs))
            status_line = await reader.readuntil(b"\r\n")
            status = int(status_line.split()[1])
            length, server_ms = 0, None
            while True:
                line = await reader.readuntil(b"\r\n")
                if line == b"\r\n":
                    break
                k, _, v = line.decode("latin-1").partition(":")
                k = k.lower()
                if k == "content-length":
                    length = int(v)
                elif k == "server-timing" and "dur=" in v:
                    server_ms = float(v.split("dur=")[1].split(";")[0].split(",")[0])
            if length:
                await reader.readexactly(length)
            lat.append((time.perf_counter() - t0) * 1000)
            if server_ms is not None:
                timing.append(server_ms)
            if status >= 400:
                errs.append(status)
    finally:
        writer.close()


def loadgen_main() -> None:
    spec = json.loads(sys.stdin.read())
    load, nonce = spec["load"], uuid.uuid4().hex[:10]
    lat: list[float] = []
    errs: list[int] = []
    timing: list[float] = []

    async def main():
        t0 = time.perf_counter()
        stop_at = t0 + spec["seconds"]
        await asyncio.gather(*(_client(spec["port"], _requests_of(load, nonce, i), stop_at, lat, errs,
                                       timing) for i in range(spec["clients"])))
        return time.perf_counter() - t0

    took = asyncio.run(main())
    print(json.dumps({"requests": len(lat), "seconds": took, "errors": len(errs),
                      "p50": percentile(lat, 50), "p95": percentile(lat, 95), "p99": percentile(lat, 99),
                      "server_p50": percentile(timing, 50), "server_p95": percentile(timing, 95)}))


# --- pgbench --------------------------------------------------------------------------------------

def pgbench(url: str, script: Path, *, name: str, clients: int, seconds: float,
            variables: dict, warmup: float = 2.0) -> Figure:
    """pgbench -M prepared with a custom script; latency percentiles from its per-transaction log."""
    base = ["pgbench", "-n", "-M", "prepared", "-c", str(clients), "-j", str(min(2, clients)),
            "-f", str(script)]
    for k, v in variables.items():
        base += ["-D", f"{k}={v}"]
    if warmup:
        _checked(base + ["-T", str(max(1, round(warmup))), libpq(url)])
    with tempfile.TemporaryDirectory() as d:
        res = _checked(base + ["-T", str(max(1, round(seconds))), "-l", "--log-prefix", f"{d}/pgb",
                               libpq(url)])
        lat = []
        for log in Path(d).glob("pgb*"):
            for line in log.read_text().splitlines():
                parts = line.split()
                if len(parts) >= 3:
                    lat.append(int(parts[2]) / 1000)  # microseconds -> ms
    out = res.stdout
    failed = 0
    for line in out.splitlines():
        if "number of failed transactions" in line:
            failed = int(line.split(":")[1].split()[0])
    return Figure(name=name, requests=len(lat), seconds=float(int(seconds)), errors=failed,
                  p50_ms=percentile(lat, 50), p95_ms=percentile(lat, 95), p99_ms=percentile(lat, 99),
                  note=f"{clients} clients, pgbench")


def _checked(cmd: list[str]) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({res.returncode}):\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    return res


# --- the table ------------------------------------------------------------------------------------

def print_table(figs: list[Figure], title: str = "") -> None:
    if title:
        print(f"\n{title}")
    head = (f"{'scenario':<34} {'req/s':>8} {'debits/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
            f"{'errors':>6}  {'peak RSS/worker MB':<20} how")
    print(head)
    print("-" * len(head))
    for f in figs:
        rss = ", ".join(f"{r:.0f}" for r in f.rss_mb) or "-"
        print(f"{f.name:<34} {f.rps:>8.0f} {f.per_second:>9.0f} {f.p50_ms:>8.1f} {f.p95_ms:>8.1f} "
              f"{f.p99_ms:>8.1f} {f.errors:>6}  {rss:<20} {f.note}")


def best(runs: list[Figure]) -> Figure:
    """The better of repeated runs (highest throughput), with the spread in its note."""
    top = max(runs, key=lambda f: f.per_second)
    if len(runs) > 1:
        lo = min(r.per_second for r in runs)
        top.note += f", best of {len(runs)} (spread {lo:.0f}-{top.per_second:.0f}/s)"
    return top


if __name__ == "__main__" and sys.argv[1:2] == ["loadgen"]:
    loadgen_main()
