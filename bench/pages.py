"""Server time of the dashboard pages (and the API ledger) on 1,000,000 ledger entries, one
customer holding 100,000 of them.

    .venv/bin/python bench/pages.py                      # ~900,000 + 100,000 entries (~5 min to load)
    .venv/bin/python bench/pages.py --smoke              # 4,000 + 1,000 entries, one request a page
    .venv/bin/python bench/pages.py --keep               # keep the loaded database (name printed)
    .venv/bin/python bench/pages.py --database-url postgresql+psycopg://postgres@127.0.0.1/<kept>

Data: bench/ledger_data.realistic (customers over 180 days: welcome and monthly grants,
purchases in two currencies, feature debits, task refunds, claw-backs, expiries; every entry
allocated, balance chains intact) plus one heavy customer (one purchase, 100,000 debits spread
over the same 180 days). `services.ledger.reconcile` checks the result, the ledger_daily rollup is
built (what the hourly rollup_ledger job maintains), then VACUUM ANALYZE. gunicorn serves it
(3 gthread workers x 3 threads, as in production); an admin signs in over HTTP and each page
is requested `--runs` times in turn after two warm-ups, one request at a time. Server time is the app's own
`Server-Timing: app;dur=` header (logs.py): what the page costs the server, without the
client's share of the machine.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests  # noqa: E402

from bench import common  # noqa: E402

EMAIL, PASSWORD = "admin@pages.bench", "bench admin password"  # noqa: S105 - a throw-away database


def heavy_customer(s, *, debits: int, days: int = 180) -> int:
    """One customer with years of use: a purchase, then `debits` debits of one credit spread
    evenly over `days` days up to now (so the newest day holds what a real day would)."""
    from bench import ledger_data
    from models import utcnow

    start = utcnow().replace(microsecond=0) - timedelta(days=days)
    return ledger_data.one_customer_many_debits(
        s, debits=debits, start=start, step=timedelta(days=days) / debits,
        features=("chat", "chat", "chat", "image", "video"), key="heavy",
        name="Heavy User", email="heavy@bench.test")


def load(url: str, *, entries: int, heavy: int) -> None:
    from bench import ledger_data
    from models import db
    from services.ledger import rollup as ledger_rollup
    from services.staff import accounts as staff

    app = common.make_app(url)
    with app.app_context():
        t0 = time.perf_counter()
        counts = ledger_data.realistic(db.session, entries=entries - heavy)
        heavy_customer(db.session, debits=heavy)
        print(f"  loaded {counts['entries'] + heavy + 1:,} entries ({counts['customers']:,} customers, "
              f"one with {heavy:,}) in {time.perf_counter() - t0:.0f} s", flush=True)
        staff.create(email=EMAIL, role="admin", password=PASSWORD, name="Bench Admin")
        t0 = time.perf_counter()
        ledger_rollup.refresh(full=True)  # what the hourly rollup_ledger job keeps up to date
        print(f"  ledger_daily rollup (the hourly job's work, full) in {time.perf_counter() - t0:.0f} s")
        db.session.remove()
        db.engine.dispose()


def facts(url: str) -> dict:
    """Ids and values the page list needs, read from the loaded ledger."""
    from sqlalchemy import create_engine, text

    with create_engine(url).connect() as c:
        heavy_id, heavy_n = c.execute(text(
            "SELECT customer_id, COUNT(*) FROM ledger_entries GROUP BY customer_id "
            "ORDER BY COUNT(*) DESC LIMIT 1")).one()
        ext = c.execute(text("SELECT external_id FROM customers WHERE id = :i"), {"i": heavy_id}).scalar()
        mid = c.execute(text("SELECT id FROM ledger_entries WHERE customer_id = :i ORDER BY id DESC "
                             "OFFSET :o LIMIT 1"), {"i": heavy_id, "o": heavy_n // 2}).scalar()
        old = c.execute(text("SELECT id FROM ledger_entries ORDER BY id OFFSET 2000 LIMIT 1")).scalar()
        newest = c.execute(text("SELECT MAX(created_at) FROM ledger_entries")).scalar()
        total = c.execute(text("SELECT COUNT(*) FROM ledger_entries")).scalar()
    return {"heavy_id": heavy_id, "heavy_n": heavy_n, "heavy_ext": ext, "mid": mid, "old": old,
            "newest": newest, "total": total}


def sign_in(base: str) -> requests.Session:
    http = requests.Session()
    page = http.get(f"{base}/login", timeout=60).text
    token = (re.search(r'name="csrf-token" content="([^"]+)"', page)
             or re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)).group(1)
    resp = http.post(f"{base}/login", data={"email": EMAIL, "password": PASSWORD, "csrf_token": token},
                     allow_redirects=False, timeout=60)
    assert resp.status_code == 302, resp.text[:300]
    return http


def pages(f: dict, api_key: str) -> list[tuple[str, str, dict]]:
    hx = {"HX-Request": "true"}
    month = (f["newest"] - timedelta(days=30)).date().isoformat()
    week = (f["newest"] - timedelta(days=7)).date().isoformat()
    api = {"Authorization": f"Bearer {api_key}"}
    cid, ext = f["heavy_id"], f["heavy_ext"]
    return [
        ("overview (30 days)", "/", {}),
        ("customer detail (100k entries)", f"/customers/{cid}", {}),
        ("customer ledger, middle page (fragment)", f"/customers/{cid}?before={f['mid']}", hx),
        ("customer ledger, debits of chat (fragment)", f"/customers/{cid}?type=debit&feature=chat",
         {**hx, "HX-Target": "statement-panel"}),
        ("transactions", "/transactions/", {}),
        ("transactions, debits of 30 days", f"/transactions/?type=debit&from={month}", {}),
        ("transactions, image of a week", f"/transactions/?feature=image&from={week}", {}),
        ("transactions, one customer", f"/transactions/?customer={ext}", {}),
        ("transactions, grants of a customer", f"/transactions/?customer={ext}&type=grant", {}),
        ("transactions, an old page (fragment)", f"/transactions/?before={f['old']}", hx),
        ("API ledger, first page", f"/api/v1/customers/{ext}/ledger?limit=50", api),
    ]


def measure(http: requests.Session, base: str, path: str, headers: dict, runs: int) -> dict:
    server, client = [], []
    for i in range(runs + 2):
        t0 = time.perf_counter()
        resp = http.get(f"{base}{path}", headers=headers, timeout=600)
        took = (time.perf_counter() - t0) * 1000
        if resp.status_code != 200:
            raise RuntimeError(f"{path}: {resp.status_code} {resp.text[:300]}")
        if i < 2:
            continue
        client.append(took)
        timing = resp.headers.get("Server-Timing", "")
        if "dur=" in timing:
            server.append(float(timing.split("dur=")[1].split(",")[0].split(";")[0]))
    p = common.percentile
    return {"p50": p(server, 50), "p95": p(server, 95), "max": max(server), "client_p50": p(client, 50),
            "bytes": len(resp.content)}


def api_ledger_next(http: requests.Session, base: str, headers: dict, ext: str) -> str:
    """The cursor of a page deep in the API ledger (walks 20 pages of 200)."""
    cursor = None
    for _ in range(20):
        q = f"/api/v1/customers/{ext}/ledger?limit=200" + (f"&cursor={cursor}" if cursor else "")
        cursor = http.get(f"{base}{q}", headers=headers, timeout=60).json()["data"]["next_cursor"]
    return cursor


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--heavy", type=int, default=100_000, help="entries of the one heavy customer")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--database-url", help="an already loaded database (e.g. one kept by --keep)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="5,000 entries, one request a page, one round")
    args = ap.parse_args(argv)
    if args.smoke:
        args.entries, args.heavy, args.runs, args.rounds = 5_000, 1_000, 1, 1

    import contextlib

    if args.database_url:
        ctx = contextlib.nullcontext(args.database_url)
    else:
        ctx = common.database("pages", keep=args.keep)
    with ctx as url:
        if not args.database_url:
            print(f"loading {args.entries:,} entries ...", flush=True)
            load(url, entries=args.entries, heavy=args.heavy)
            common.reconcile(url)
            common.analyze(url)
        f = facts(url)
        key = common.api_key(url)
        results: dict[str, list[dict]] = {}
        for rnd in range(args.rounds):
            with common.gunicorn("wsgi:app", url=url, workers=args.workers, ready_path="/login",
                                 env={"LOG_LEVEL": "WARNING"}) as srv:
                http = sign_in(srv.base)
                todo = pages(f, key)
                cursor = api_ledger_next(http, srv.base, {"Authorization": f"Bearer {key}"}, f["heavy_ext"])
                if cursor:
                    todo.append(("API ledger, page 21 (cursor)",
                                 f"/api/v1/customers/{f['heavy_ext']}/ledger?limit=50&cursor={cursor}",
                                 {"Authorization": f"Bearer {key}"}))
                for name, path, headers in todo:
                    results.setdefault(name, []).append(measure(http, srv.base, path, headers, args.runs))
                rss = srv.peak_rss_mb()
            print(f"  round {rnd + 1}/{args.rounds} done", flush=True)
    print(f"\nPages: {f['total']:,} ledger entries, heaviest customer {f['heavy_n']:,}; "
          f"{args.runs} requests a page after 2 warm-ups, one at a time; gunicorn {args.workers} x gthread; "
          f"best of {args.rounds} rounds (spread of p95)")
    print(f"{'page':<44} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'client p50':>10}  p95 spread")
    for name, rs in results.items():
        b = min(rs, key=lambda r: r["p95"])
        spread = f"{min(r['p95'] for r in rs):.0f}-{max(r['p95'] for r in rs):.0f}"
        print(f"{name:<44} {b['p50']:>8.1f} {b['p95']:>8.1f} {b['max']:>8.1f} "
              f"{b['client_p50']:>10.1f}  {spread}")
    print(f"peak RSS per worker: {', '.join(f'{r:.0f}' for r in rss)} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
