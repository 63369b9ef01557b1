"""CSV export of 1,000,000 ledger entries through the HTTP endpoint, next to PostgreSQL's COPY.

    .venv/bin/python bench/export.py              # about 1,000,000 entries
    .venv/bin/python bench/export.py --smoke      # 20,000 entries, a few seconds
    BENCH_DATABASE_URL=postgresql+psycopg://... .venv/bin/python bench/export.py

Without BENCH_DATABASE_URL it creates (and drops) a fresh database on the local server. The ledger
is realistic (bench/ledger_data.realistic: customers over 180 days, purchases in two currencies,
feature debits, task refunds, expiries, claw-backs). Then, in the same run:
  1. the export: GET /transactions/export.csv from a gunicorn worker (one sync worker, signed in
     as finance), consumed as it streams; rows/s, bytes and the worker's peak RSS (VmHWM);
  2. the floor: `COPY (<the export's own SELECT>) TO STDOUT WITH CSV` through psycopg, consumed
     the same way: the database's fastest way to the same rows;
for the whole ledger and for one filtered view (debits of the last 30 days).
"""
from __future__ import annotations

import argparse
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.finance_setup import Server, database, make_app  # noqa: E402


def copy_floor(url: str, query: dict) -> tuple[int, int, float]:
    """COPY (same SELECT) TO STDOUT WITH CSV: (rows, bytes, seconds)."""
    import psycopg
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.engine import make_url

    from models import db
    from services.reporting import export, transactions

    app = make_app(url)
    with app.app_context():
        job = export.prepare(transactions.Filters.parse(query))
        sql = str(job.statement().compile(dialect=postgresql.dialect(),
                                          compile_kwargs={"literal_binds": True}))
        db.session.remove()
        db.engine.dispose()
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    rows = size = 0
    t0 = time.perf_counter()
    with psycopg.connect(dsn) as conn, conn.cursor() as cur, \
            cur.copy(f"COPY ({sql}) TO STDOUT WITH CSV HEADER") as cp:
        for chunk in cp:
            size += len(chunk)
            rows += bytes(chunk).count(b"\n")
    return rows - 1, size, time.perf_counter() - t0


def http_export(server: Server, query: dict) -> tuple[int, int, float, float]:
    """GET the export, consumed as it streams: (rows, bytes, seconds, first-byte seconds)."""
    rows = size = 0
    t0 = time.perf_counter()
    first = None
    with server.http.get(f"{server.base}/transactions/export.csv", params=query, stream=True,
                         timeout=900) as resp:
        resp.raise_for_status()
        for chunk in resp.iter_content(chunk_size=64 * 1024):
            if first is None:
                first = time.perf_counter() - t0
            size += len(chunk)
            rows += chunk.count(b"\n")  # CRLF line ends; never split inside "\n"
    return rows - 1, size, time.perf_counter() - t0, first or 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="20,000 entries: checks the script works")
    ap.add_argument("--entries", type=int, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = ap.parse_args()
    entries = args.entries or (20_000 if args.smoke else 1_000_000)
    print(f"CSV export bench: about {entries:,} ledger entries on PostgreSQL")
    with database("export", entries=entries, keep=args.keep) as url:
        from models import utcnow
        today = utcnow().date()
        scenarios = [("whole ledger", {}),
                     ("debits, last 30 days", {"type": "debit",
                                               "from": (today - timedelta(days=29)).isoformat(),
                                               "to": today.isoformat()})]
        server = Server(url)
        try:
            server.http.get(f"{server.base}/transactions/").raise_for_status()  # warm the worker
            before = server.rss_mb()
            print(f"  gunicorn worker RSS before any export: {before:.0f} MB "
                  "(the peak is reset before each export)")
            results = []
            for label, query in scenarios:
                f_rows, f_bytes, f_secs = copy_floor(url, query)
                server.reset_peak()
                h_rows, h_bytes, h_secs, first = http_export(server, query)
                assert h_rows == f_rows, (label, h_rows, f_rows)
                peak = server.peak_rss_mb()
                results.append((label, h_rows, h_bytes, h_secs, first, f_bytes, f_secs, peak))
            print()
            print("| scenario | rows | HTTP export | rows/s | first byte | COPY floor | rows/s | "
                  "ratio | CSV size | worker peak RSS |")
            print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            for label, rows, h_bytes, h_secs, first, f_bytes, f_secs, peak in results:
                print(f"| {label} | {rows:,} | {h_secs:.2f} s | {rows / h_secs:,.0f} | {first:.2f} s | "
                      f"{f_secs:.2f} s | {rows / f_secs:,.0f} | {h_secs / f_secs:.1f}x | "
                      f"{h_bytes / 1e6:.0f} MB (COPY {f_bytes / 1e6:.0f} MB) | {peak:.0f} MB |")
            print(f"\n  worker RSS after the exports: {server.rss_mb():.0f} MB (before: {before:.0f} MB)")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
