"""Server time of the dashboard's operations pages on the demo data set.

    .venv/bin/python bench/pages_demo.py            # seeds $TMPDIR/creditdesk-pages-demo.sqlite3 once
    .venv/bin/python bench/pages_demo.py --runs 50 --fresh
    .venv/bin/python bench/pages_demo.py --database-url postgresql+psycopg://postgres@127.0.0.1/demo

The database is made the way a newcomer makes it: `flask --app wsgi db upgrade` and
`flask --app wsgi seed-demo` (1,000 customers, six months, ~100k ledger entries). Each page is
requested through the Flask test client as the demo admin: two warm-up requests, then `--runs`
timed ones. It prints p50 / p95 / max server time and the SQL statements per request.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_DB = Path(tempfile.gettempdir()) / "creditdesk-pages-demo.sqlite3"


def seed(url: str, customers: int) -> None:
    env = {**os.environ, "DATABASE_URL": url, "SCHEDULER_ENABLED": "0", "LOG_JSON": "0",
           "SECRET_KEY": os.environ.get("SECRET_KEY", "bench-pages-demo")}
    flask = [str(ROOT / ".venv" / "bin" / "flask"), "--app", "wsgi"]
    # Their output goes to stderr: stdout is the table.
    subprocess.run([*flask, "db", "upgrade"], cwd=ROOT, env=env, check=True, stdout=sys.stderr)
    subprocess.run([*flask, "seed-demo", "--customers", str(customers), "--if-empty"], cwd=ROOT,
                   env=env, check=True, stdout=sys.stderr)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    ap.add_argument("--db", type=Path, default=DEFAULT_DB, help="SQLite file (when no URL is given)")
    ap.add_argument("--customers", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--fresh", action="store_true", help="delete the SQLite file and seed again")
    args = ap.parse_args()

    url = args.database_url or f"sqlite:///{args.db}"
    if not args.database_url and args.fresh and args.db.exists():
        args.db.unlink()
    t0 = time.perf_counter()
    seed(url, args.customers)
    print(f"database ready in {time.perf_counter() - t0:.1f} s: {url}", file=sys.stderr)

    from sqlalchemy import event, func, select

    from dashboard import create_app
    from models import (
        Customer,
        FeaturePrice,
        JobRun,
        LedgerEntry,
        Plan,
        Staff,
        Task,
        db,
    )
    from services.staff import adjustments
    from tests.helpers import csrf_from

    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SCHEDULER_ENABLED": False,
                      "SESSION_COOKIE_SECURE": False, "RATELIMIT_ENABLED": False,
                      "LOG_LEVEL": "WARNING", "LOG_JSON": False})
    with app.app_context():
        s = db.session
        entries = s.scalar(select(func.count(LedgerEntry.id)))
        customers = s.scalar(select(func.count(Customer.id)))
        # What a real overview shows: a reconcile run and something waiting for approval.
        if not s.scalar(select(JobRun.id).where(JobRun.job == "reconcile_ledger")):
            from jobs import reconcile_ledger
            reconcile_ledger.run(period="bench", trigger="manual")
        support = s.scalar(select(Staff).where(Staff.role == "support"))
        heavy_id, heavy_n = s.execute(
            select(LedgerEntry.customer_id, func.count(LedgerEntry.id))
            .group_by(LedgerEntry.customer_id).order_by(func.count(LedgerEntry.id).desc()).limit(1)).one()
        if not adjustments.pending(limit=1):
            adjustments.submit(customer_id=heavy_id, credits=5000, reason_code="service_issue",
                               note="bench: waiting for approval", staff=support)
        heavy = s.get(Customer, heavy_id)
        middle_entry = s.scalar(select(LedgerEntry.id).where(LedgerEntry.customer_id == heavy_id)
                                .order_by(LedgerEntry.id.desc()).offset(100).limit(1))
        oldest_tx = s.scalar(select(LedgerEntry.id).order_by(LedgerEntry.id).offset(2000).limit(1))
        task_id = s.scalar(select(Task.id).order_by(Task.id.desc()).limit(1))
        plan_id = s.scalar(select(Plan.id).order_by(Plan.id).limit(1))
        price_id = s.scalar(select(FeaturePrice.id).where(FeaturePrice.feature == "chat"))
        month_ago = s.scalar(select(func.max(LedgerEntry.created_at))).date().replace(day=1)
        db.session.remove()

    client = app.test_client()
    token = csrf_from(client.get("/login").get_data(as_text=True))
    resp = client.post("/login", data={"email": "admin@creditdesk.test",
                                       "password": "demo-admin-password", "csrf_token": token})
    assert resp.status_code == 302, "demo admin could not sign in"
    hx = {"HX-Request": "true"}
    pages = [
        ("overview", "/", {}),
        ("customers list", "/customers/", {}),
        ("customer live search (fragment)", "/customers/?q=patel", hx),
        ("customer detail (heaviest)", f"/customers/{heavy_id}", {}),
        ("statement filtered (fragment)", f"/customers/{heavy_id}?type=debit&feature=chat",
         {**hx, "HX-Target": "statement-panel"}),
        ("statement older page (fragment)", f"/customers/{heavy_id}?before={middle_entry}", hx),
        ("transactions", "/transactions/", {}),
        ("transactions by type + month", f"/transactions/?type=debit&from={month_ago}", {}),
        ("transactions by customer", f"/transactions/?customer={heavy.external_id}", {}),
        ("transactions old page (fragment)", f"/transactions/?before={oldest_tx}", hx),
        ("tasks", "/tasks/", {}),
        ("tasks failed", "/tasks/?status=failed", {}),
        ("task detail", f"/tasks/{task_id}", {}),
        ("plans", "/plans/", {}),
        ("plan edit", f"/plans/{plan_id}", {}),
        ("packages", "/packages/", {}),
        ("pricing", "/pricing/", {}),
        ("pricing impact (fragment)", f"/pricing/{price_id}/impact?credits_per_unit=2", hx),
    ]
    print(f"Demo data: {customers:,} customers, {entries:,} ledger entries; heaviest customer "
          f"{heavy_n:,} entries. {args.runs} requests per page after 2 warm-ups, Flask test client, "
          f"{'SQLite' if url.startswith('sqlite') else 'PostgreSQL'}.\n")
    print("| page | p50 ms | p95 ms | max ms | SQL statements |")
    print("|---|---:|---:|---:|---:|")
    with app.app_context():
        engine = db.engine
    counter = {"n": 0}

    def on_execute(*_a):
        counter["n"] += 1

    event.listen(engine, "before_cursor_execute", on_execute)
    for name, path, headers in pages:
        for _ in range(2):
            assert client.get(path, headers=headers).status_code == 200, path
        times = []
        for _ in range(args.runs):
            counter["n"] = 0
            t = time.perf_counter()
            r = client.get(path, headers=headers)
            times.append((time.perf_counter() - t) * 1000)
            assert r.status_code == 200, (path, r.status_code)
        print(f"| {name} | {statistics.median(times):,.1f} | {percentile(times, 95):,.1f} | "
              f"{max(times):,.1f} | {counter['n']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
