"""Profile the single API debit in-process: N requests through Flask's test client with the
shipped settings (rate limits in Redis when it answers, JSON request log, pool pre-ping).

    .venv/bin/python bench/profile_debit.py -n 2000            # cProfile, top 40 by own time
    .venv/bin/python bench/profile_debit.py -n 2000 --hot      # every debit on one customer
    .venv/bin/python bench/profile_debit.py -n 2000 --sql      # statements per debit (round trips)

The request log goes to /dev/null, so the figures are the work of the request, not of a
terminal. Prints the wall time per debit, then the profile.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--customers", type=int, default=1000)
    ap.add_argument("--hot", action="store_true")
    ap.add_argument("--sql", action="store_true", help="count the statements of one debit")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--plain", action="store_true", help="no profiler: wall and CPU ms per debit")
    args = ap.parse_args(argv)
    with common.database("profile") as url:
        customers = common.load_customers(url, customers=args.customers, credits=10**12 // 2)
        common.feature_prices(url)
        key = common.api_key(url)
        common.analyze(url)
        extra = {"LOG_JSON": True, "LOG_LEVEL": "INFO"}
        if common.redis_answers():
            extra |= {"REDIS_URL": common.REDIS_URL,
                      "RATELIMIT_KEY_PREFIX": f"profile-{uuid.uuid4().hex[:6]}"}
        app = common.make_app(url, **extra)
        import logging

        for h in logging.getLogger().handlers:  # ours, and any the migrations' logging config left
            if isinstance(h, logging.StreamHandler):
                h.setStream(open(os.devnull, "w"))  # noqa: SIM115
        client = app.test_client()
        headers = {"Authorization": f"Bearer {key}"}

        def one(i: int) -> None:
            who = customers[0] if args.hot else customers[i % len(customers)]
            r = client.post(f"/api/v1/customers/{who}/debits", json={"feature": "chat"},
                            headers={**headers, "Idempotency-Key": f"p-{i}-{uuid.uuid4().hex}"})
            assert r.status_code == 201, (r.status_code, r.get_data(as_text=True))

        for i in range(200):  # warm: prepared statements, caches
            one(i)
        if args.sql:
            from sqlalchemy import event

            from models import db

            seen: list[str] = []
            with app.app_context():
                engine = db.engine
            pool_conn = engine.raw_connection()
            pool_conn.close()
            import psycopg

            orig = psycopg.Cursor.execute

            def spy(self, query, params=None, **kw):
                seen.append(str(query)[:70].replace("\n", " "))
                return orig(self, query, params, **kw)

            psycopg.Cursor.execute = spy
            event.listen(engine, "before_cursor_execute", lambda *a: None)
            one(10**6)
            psycopg.Cursor.execute = orig
            print(f"{len(seen)} statements through psycopg's cursors:")
            for q in seen:
                print("  ", q)
        if args.plain:
            t0, c0 = time.perf_counter(), time.process_time()
            for i in range(args.n):
                one(10**7 + i)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            print(f"{args.n} debits: {wall / args.n * 1000:.2f} ms wall, "
                  f"{cpu / args.n * 1000:.2f} ms CPU (this process) each")
            return 0
        prof = cProfile.Profile(time.process_time)  # CPU time: waits and a busy machine do not count
        t0 = time.perf_counter()
        prof.enable()
        for i in range(args.n):
            one(10**7 + i)
        prof.disable()
        if os.environ.get("PROFILE_OUT"):
            prof.dump_stats(os.environ["PROFILE_OUT"])
        wall = time.perf_counter() - t0
        print(f"{args.n} debits, {wall / args.n * 1000:.2f} ms each (profiled)")
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(args.top)
        print(out.getvalue())
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(60)
        print(out.getvalue())
        from models import db

        with app.app_context():
            db.session.remove()
            db.engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
