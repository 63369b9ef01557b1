"""Analytics page server time on 1,000,000 ledger entries: live aggregates vs daily rollups.

    .venv/bin/python bench/analytics.py              # about 1,000,000 entries
    .venv/bin/python bench/analytics.py --smoke      # 20,000 entries, a few seconds
    BENCH_DATABASE_URL=postgresql+psycopg://... .venv/bin/python bench/analytics.py

A fresh PostgreSQL database (created and dropped) with a realistic ledger over 180 days
(bench/ledger_data.realistic), served by gunicorn (one sync worker) and signed in as finance.
For ranges of 30 and 180 days, GET /analytics/ N times and report p50/p95 of the response time
(the server's time: client and server share the machine, nothing else is on the wire):
  1. live: no rollup yet, every figure aggregated from the ledger through its indexes;
  2. rollup: after `flask rollup-ledger` (timed), days up to yesterday from ledger_daily and
     only today live.
Also the roll-forward report (/reports/) of the current month and of the oldest month, and the
provider reconciliation fragment.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.finance_setup import Server, database, make_app, percentile  # noqa: E402


def timed(server: Server, path: str, n: int, headers: dict | None = None) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        resp = server.http.get(f"{server.base}{path}", timeout=600, headers=headers)
        out.append(time.perf_counter() - t0)
        resp.raise_for_status()
    return out


def refresh(url: str) -> tuple[float, object]:
    app = make_app(url)
    with app.app_context():
        from models import db
        from services.ledger import rollup as ledger_rollup
        t0 = time.perf_counter()
        res = ledger_rollup.refresh(full=True)
        secs = time.perf_counter() - t0
        db.session.remove()
        db.engine.dispose()
    return secs, res


def reset_rollups(url: str) -> None:
    """Start without rollups (a reused BENCH_DATABASE_URL may have them from an earlier run)."""
    from sqlalchemy import create_engine, text
    with create_engine(url, isolation_level="AUTOCOMMIT").connect() as c:
        c.execute(text("DELETE FROM ledger_daily"))
        c.execute(text("DELETE FROM ledger_rollup_state"))


def oldest_period(url: str) -> str:
    app = make_app(url)
    with app.app_context():
        from models import db
        from services.reporting import rollforward
        out = rollforward.periods()[-1]
        db.session.remove()
        db.engine.dispose()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="20,000 entries: checks the script works")
    ap.add_argument("--entries", type=int, default=None)
    ap.add_argument("-n", type=int, default=None, help="requests per measurement")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    entries = args.entries or (20_000 if args.smoke else 1_000_000)
    n = args.n or (5 if args.smoke else 20)
    print(f"Analytics bench: about {entries:,} ledger entries on PostgreSQL, {n} requests each")
    with database("analytics", entries=entries, keep=args.keep) as url:
        reset_rollups(url)
        server = Server(url)
        rows = []
        try:
            server.http.get(f"{server.base}/analytics/?days=7").raise_for_status()  # warm up
            for days in (30, 180):
                t = timed(server, f"/analytics/?days={days}", n)
                rows.append((f"/analytics/ {days} days, live (no rollup)", t))
            secs, res = refresh(url)
            print(f"  rollup-ledger --full: {res.days} days, {res.rows:,} rows in {secs:.2f} s")
            for days in (30, 180):
                t = timed(server, f"/analytics/?days={days}", n)
                rows.append((f"/analytics/ {days} days, rollups + today live", t))
            t = timed(server, "/analytics/?days=30&price=2", n,
                      headers={"HX-Request": "true", "HX-Target": "economics"})
            rows.append(("/analytics/ 30 days what-if fragment (htmx)", t))
            k = max(3, n // 4)
            rows.append(("/reports/ roll-forward, current month", timed(server, "/reports/", k)))
            oldest = oldest_period(url)
            rows.append((f"/reports/?month={oldest} roll-forward, oldest month",
                         timed(server, f"/reports/?month={oldest}", k)))
            rows.append(("/reports/reconciliation (every payment and refund)",
                         timed(server, "/reports/reconciliation", k,
                               headers={"HX-Request": "true"})))
            print()
            print("| page | p50 | p95 | max |")
            print("|---|---:|---:|---:|")
            for label, t in rows:
                print(f"| {label} | {percentile(t, 50) * 1000:.0f} ms | {percentile(t, 95) * 1000:.0f} ms | "
                      f"{max(t) * 1000:.0f} ms |")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
