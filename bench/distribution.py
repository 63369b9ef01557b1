"""Distribution over 100,000 customers on PostgreSQL, next to a hand-written set-based floor.

    .venv/bin/python bench/distribution.py              # 100,000 customers
    .venv/bin/python bench/distribution.py --smoke      # 2,000 customers, a few seconds
    BENCH_DATABASE_URL=postgresql+psycopg://... .venv/bin/python bench/distribution.py

Without BENCH_DATABASE_URL it creates (and drops) a fresh database on the local server. The data
set is loaded consistently (every grant has its entry and allocation, balances match; reconcile
passes), copied with CREATE DATABASE ... TEMPLATE, and then:
  1. services.jobs.distribution.run over the first copy (expiry pass, claim, chunks, counts);
  2. the floor: a minimal set of SQL statements over the second copy granting the same credits
     with the same rows (grants, entries with the balance chain, allocations, balances) and the
     same outbox events (the expiry's balance notices, grant.created per grant);
and both ledgers and outboxes are compared before the times and their ratio are printed.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

PLANS = [  # id, code, interval, monthly credits, expiry days
    (1, "pro-monthly", "month", 1000, 31), (2, "pro-yearly", "year", 800, 40),
    (3, "lifetime", "lifetime", 600, None), (4, "free", "free", 0, 10),
]


def populate(conn, *, customers: int, seed: int = 7, now: datetime | None = None) -> dict:
    """Customers of every segment, 30% with an expired promo grant, 20% with a live purchase.

    Inserted with explicit ids through executemany; consistent with every ledger invariant.
    Returns counts. `conn` is a SQLAlchemy connection inside a transaction (committed by caller).
    """
    rng = random.Random(seed)
    now = now or datetime.now(UTC).replace(tzinfo=None)
    dialect = conn.dialect.name
    conn.execute(text(
        "INSERT INTO plans (id, code, name, interval, price_minor, currency, monthly_credits, "
        "credit_expiry_days, description, created_at, updated_at) VALUES (:id, :code, :code, "
        ":interval, 0, 'USD', :mc, :days, '', :now, :now)"),
        [dict(id=i, code=c, interval=iv, mc=mc, days=d, now=now) for i, c, iv, mc, d in PLANS])
    cust, acct, grants, entries, allocs = [], [], [], [], []
    gid = eid = 0
    for i in range(1, customers + 1):
        r = rng.random()
        plan, status, end = None, "none", None
        if r < 0.05:
            plan = 4
        elif r < 0.25:
            plan, status = 1, rng.choices(["active", "past_due", "cancelled"], [90, 5, 5])[0]
        elif r < 0.40:
            plan, status = 2, rng.choices(["active", "past_due", "cancelled"], [85, 5, 10])[0]
            end = now + timedelta(days=rng.choice([-3, 90]))
        elif r < 0.50:
            plan, status = 3, rng.choices(["active", "cancelled"], [95, 5])[0]
        created = now - timedelta(days=rng.randint(1, 400))
        cust.append(dict(id=i, external_id=f"bench_{seed}_{i}", email=f"c{i}@bench.test",
                         name=f"Customer {i}", plan_id=plan, subscription_status=status,
                         current_period_end=end, created_at=created, updated_at=created))
        balance, version = 0, 0
        for kind in ("promo", "purchase"):
            if (kind == "promo" and rng.random() < 0.30) or (kind == "purchase" and rng.random() < 0.20):
                gid, eid = gid + 1, eid + 1
                amount = rng.randint(20, 200)
                expires = now - timedelta(days=1) if kind == "promo" else None
                grants.append(dict(id=gid, account_id=i, customer_id=i, source=kind, amount=amount,
                                   remaining=amount, expires_at=expires, cost_minor=0,
                                   created_at=created))
                entries.append(dict(id=eid, account_id=i, customer_id=i, type="grant",
                                    amount=amount, balance_before=balance,
                                    balance_after=balance + amount, actor_type="system",
                                    idempotency_key=f"seed:{seed}:{gid}", grant_id=gid,
                                    created_at=created))
                allocs.append(dict(id=eid, entry_id=eid, grant_id=gid, credits=amount))
                balance, version = balance + amount, version + 1
        acct.append(dict(id=i, customer_id=i, balance=balance, version=version, updated_at=created))
    ins = [("customers", cust), ("accounts", acct), ("credit_grants", grants),
           ("ledger_entries", entries), ("allocations", allocs)]
    for table, rows in ins:
        if not rows:
            continue
        cols = list(rows[0])
        stmt = text(f"INSERT INTO {table} ({', '.join(cols)}) VALUES "
                    f"({', '.join(':' + c for c in cols)})")
        for k in range(0, len(rows), 5000):
            conn.execute(stmt, rows[k:k + 5000])
    if dialect == "postgresql":
        for table in ("plans", "customers", "accounts", "credit_grants", "ledger_entries",
                      "allocations"):
            conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                              f"(SELECT COALESCE(MAX(id), 1) FROM {table}))"))
    return {"customers": customers, "grants": len(grants)}


def snapshot(conn) -> dict:
    """The ledger without ids and timestamps: what must match between two runs."""
    q = {
        "entries": "SELECT customer_id, type, amount, balance_before, balance_after, idempotency_key "
                   "FROM ledger_entries ORDER BY customer_id, id",
        "grants": "SELECT customer_id, source, amount, remaining, period, plan_id, "
                  "expired_at IS NOT NULL FROM credit_grants ORDER BY customer_id, id",
        "allocations": "SELECT e.customer_id, e.type, a.credits FROM allocations a JOIN "
                       "ledger_entries e ON e.id = a.entry_id ORDER BY e.customer_id, e.id, a.id",
        "accounts": "SELECT customer_id, balance, version FROM accounts ORDER BY customer_id",
    }
    snap = {k: [tuple(r) for r in conn.execute(text(sql))] for k, sql in q.items()}
    # the outbox too: same events, same data (but the new grant's id and expiry time)
    events = []
    for cid, type_, data in conn.execute(text(
            "SELECT customer_id, type, data FROM outbox_events ORDER BY customer_id, id")):
        data = dict(json.loads(data) if isinstance(data, str) else data)
        data.pop("grant_id", None)
        events.append((cid, type_, data.pop("expires_at", "-") is None, sorted(data.items())))
    snap["events"] = events
    return snap


# --- the floor: granting the same credits in a few set-based statements -------------------------

FLOOR_SQL = [
    # Expiry: one entry per due grant, in grant order per account, then zero the buckets.
    """CREATE TEMP TABLE due AS
       SELECT g.id AS grant_id, g.account_id, g.customer_id, g.remaining,
              nextval(pg_get_serial_sequence('ledger_entries', 'id')) AS entry_id
       FROM credit_grants g JOIN customers c ON c.id = g.customer_id AND c.deleted_at IS NULL
       WHERE g.expires_at IS NOT NULL AND g.expires_at <= :now AND g.remaining > 0
         AND g.source NOT IN ('purchase', 'subscription')
       ORDER BY g.account_id, g.id""",
    """INSERT INTO ledger_entries (id, account_id, customer_id, type, amount, balance_before,
         balance_after, actor_type, actor_id, reason, idempotency_key, grant_id, created_at)
       SELECT d.entry_id, d.account_id, d.customer_id, 'expiry', -d.remaining,
              a.balance - SUM(d.remaining) OVER w + d.remaining, a.balance - SUM(d.remaining) OVER w,
              'job', 'floor', 'credits expired', 'expiry:' || d.grant_id, d.grant_id, :now
       FROM due d JOIN accounts a ON a.id = d.account_id
       WINDOW w AS (PARTITION BY d.account_id ORDER BY d.entry_id)""",
    """INSERT INTO allocations (entry_id, grant_id, credits)
       SELECT entry_id, grant_id, -remaining FROM due""",
    # The expiry's balance notices (services.ledger.crossings: low balance when the threshold is
    # crossed, depleted at 0), per entry in posting order, as the service writes them.
    """INSERT INTO outbox_events (event_id, type, customer_id, data, created_at)
       SELECT 'msg_' || replace(gen_random_uuid()::text, '-', ''), n.type, e.customer_id,
              json_build_object('balance', e.balance_after, 'threshold', t.threshold,
                                'external_id', c.external_id), :now
       FROM due d JOIN ledger_entries e ON e.id = d.entry_id
       JOIN customers c ON c.id = e.customer_id LEFT JOIN plans p ON p.id = c.plan_id
       CROSS JOIN LATERAL (SELECT COALESCE(c.low_balance_threshold, p.low_balance_threshold,
                                           :low) AS threshold) t
       CROSS JOIN LATERAL (VALUES (1, 'credits.low_balance'), (2, 'credits.depleted')) n(k, type)
       WHERE (n.k = 1 AND t.threshold > 0 AND e.balance_before >= t.threshold
              AND t.threshold > e.balance_after)
          OR (n.k = 2 AND e.balance_before > 0 AND e.balance_after <= 0)
       ORDER BY e.id, n.k""",
    """UPDATE credit_grants g SET remaining = 0, expired_at = :now FROM due d WHERE g.id = d.grant_id""",
    """UPDATE accounts a SET balance = a.balance - x.total, version = a.version + x.n
       FROM (SELECT account_id, SUM(remaining) AS total, COUNT(*) AS n FROM due GROUP BY account_id) x
       WHERE a.id = x.account_id""",
    # Distribution: who gets what (the same segment rules), with ids drawn up front.
    """CREATE TEMP TABLE give AS
       SELECT c.id AS customer_id, a.id AS account_id, a.balance, s.credits, s.days, s.plan_id,
              nextval(pg_get_serial_sequence('credit_grants', 'id')) AS grant_id,
              nextval(pg_get_serial_sequence('ledger_entries', 'id')) AS entry_id
       FROM customers c JOIN accounts a ON a.customer_id = c.id
       LEFT JOIN plans p ON p.id = c.plan_id
       CROSS JOIN LATERAL (SELECT
         (p.id IS NULL OR p.interval = 'free'
          OR (c.subscription_status = 'cancelled' AND p.interval = 'lifetime')
          OR (c.subscription_status = 'cancelled' AND p.interval IN ('month', 'year')
              AND NOT COALESCE(c.current_period_end > :now, false))) AS free_tier) f
       CROSS JOIN LATERAL (SELECT
         CASE WHEN f.free_tier THEN :free WHEN p.interval = 'month' THEN 0
              WHEN c.subscription_status = 'past_due' THEN 0
              WHEN p.interval IN ('year', 'lifetime') THEN p.monthly_credits ELSE 0 END AS credits,
         CASE WHEN f.free_tier AND p.interval = 'free' THEN p.credit_expiry_days
              WHEN f.free_tier THEN NULL ELSE p.credit_expiry_days END AS days,
         CASE WHEN f.free_tier THEN NULL ELSE p.id END AS plan_id) s
       WHERE c.deleted_at IS NULL AND c.created_at <= :now AND s.credits > 0
         AND NOT EXISTS (SELECT 1 FROM ledger_entries e
                         WHERE e.idempotency_key = 'distribution:' || :period || ':' || c.id)
       ORDER BY a.id""",
    """INSERT INTO credit_grants (id, account_id, customer_id, source, amount, remaining, expires_at,
         cost_minor, plan_id, period, created_at)
       SELECT grant_id, account_id, customer_id, 'distribution', credits, credits,
              :now + make_interval(days => COALESCE(days, :default_days)), 0, plan_id, :period, :now
       FROM give""",
    """INSERT INTO ledger_entries (id, account_id, customer_id, type, amount, balance_before,
         balance_after, actor_type, actor_id, reason, idempotency_key, grant_id, created_at)
       SELECT entry_id, account_id, customer_id, 'grant', credits, balance, balance + credits,
              'job', 'floor', 'Monthly credits', 'distribution:' || :period || ':' || customer_id,
              grant_id, :now
       FROM give""",
    """INSERT INTO allocations (entry_id, grant_id, credits) SELECT entry_id, grant_id, credits FROM give""",
    """UPDATE accounts a SET balance = a.balance + g.credits, version = a.version + 1
       FROM give g WHERE a.id = g.account_id""",
    # grant.created per grant (services.ledger.bulk / services.events.outbox: same data).
    """INSERT INTO outbox_events (event_id, type, customer_id, data, created_at)
       SELECT 'msg_' || replace(gen_random_uuid()::text, '-', ''), 'grant.created', g.customer_id,
              json_build_object('grant_id', g.grant_id, 'credits', g.credits,
                                'source', 'distribution',
                                'expires_at', to_char(:now + make_interval(
                                    days => COALESCE(g.days, :default_days)),
                                    'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                                'external_id', c.external_id), :now
       FROM give g JOIN customers c ON c.id = g.customer_id ORDER BY g.grant_id""",
]


def run_floor(url, *, period: str, free: int, default_days: int, low: int = 100) -> float:
    engine = create_engine(url)
    now = datetime.now(UTC).replace(tzinfo=None)
    t0 = time.perf_counter()
    with engine.begin() as conn:
        for sql in FLOOR_SQL:
            conn.execute(text(sql), {"now": now, "period": period, "free": free,
                                     "default_days": default_days, "low": low})
    seconds = time.perf_counter() - t0
    engine.dispose()
    return seconds


def run_service(url, *, period: str) -> tuple[float, object]:
    os.environ["DATABASE_URL"] = url
    from dashboard import create_app
    from services.jobs import distribution

    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SCHEDULER_ENABLED": False,
                      "LOG_LEVEL": "WARNING", "LOG_JSON": False})
    with app.app_context():
        t0 = time.perf_counter()
        result = distribution.run(period=period, trigger="cli")
        seconds = time.perf_counter() - t0
        from services.ledger import reconcile
        report = reconcile.run()
        assert report.ok, report.lines()
        from models import db
        db.session.remove()
        db.engine.dispose()
    return seconds, result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--smoke", action="store_true", help="2,000 customers: a few seconds")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    n = 2000 if args.smoke else args.customers
    base = make_url(os.environ.get("BENCH_DATABASE_URL")
                    or "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    if base.get_backend_name() != "postgresql":
        print("bench/distribution.py needs PostgreSQL", file=sys.stderr)
        return 2
    tag = uuid.uuid4().hex[:6]
    names = [f"bench_dist_{tag}_{k}" for k in ("seed", "service", "floor")]
    admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{names[0]}"'))
        seed_url = base.set(database=names[0])
        import models  # noqa: F401  (all tables on the metadata)
        from models import db
        eng = create_engine(seed_url)
        db.metadata.create_all(eng)
        t0 = time.perf_counter()
        with eng.begin() as conn:
            stats = populate(conn, customers=n, seed=args.seed)
        with eng.begin() as conn:  # committed: a rolled-back ANALYZE leaves no statistics
            conn.execute(text("ANALYZE"))
        eng.dispose()
        print(f"loaded {stats['customers']:,} customers, {stats['grants']:,} grants in "
              f"{time.perf_counter() - t0:.1f} s")
        with admin.connect() as c:
            for name in names[1:]:
                c.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{names[0]}"'))
        period = "2031-01"
        service_url = base.set(database=names[1]).render_as_string(hide_password=False)
        floor_url = base.set(database=names[2]).render_as_string(hide_password=False)
        service_s, result = run_service(service_url, period=period)
        floor_s = run_floor(floor_url, period=period, free=50, default_days=365)
        snaps = []
        for url in (service_url, floor_url):
            e = create_engine(url)
            with e.connect() as conn:
                snaps.append(snapshot(conn))
            e.dispose()
        same = snaps[0] == snaps[1]
        for k in snaps[0]:
            if snaps[0][k] != snaps[1][k]:
                print(f"differs: {k} ({len(snaps[0][k]):,} rows vs {len(snaps[1][k]):,})")
        print(f"distribution service: {service_s:8.2f} s  ({result.processed_count:,} grants, "
              f"{result.expired.get('grants', 0):,} expiries, {result.error_count} errors; "
              f"expiry pass {result.seconds.get('expiry', 0):.1f} s, grants "
              f"{result.seconds.get('grants', 0):.1f} s)")
        print(f"set-based SQL floor:  {floor_s:8.2f} s")
        print(f"ratio service/floor:  {service_s / floor_s:8.1f} x")
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"same ledger rows and events: {'yes' if same else 'NO'}  · machine: {os.cpu_count()} cores, "
              f"load average {load}")
        return 0 if same else 1
    finally:
        with admin.connect() as c:
            for name in names:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    sys.exit(main())
