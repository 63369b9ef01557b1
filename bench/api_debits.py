"""Debits through the full API, next to two baselines on the same database.

    .venv/bin/python bench/api_debits.py                 # 10,000 customers, 16 clients, 10 s a run, 2 rounds
    .venv/bin/python bench/api_debits.py --smoke         # tiny and short: proves the script runs
    .venv/bin/python bench/api_debits.py --workers 3 --worker-class sync
    BENCH_DATABASE_URL=postgresql+psycopg://user@host/postgres .venv/bin/python bench/api_debits.py

Scenarios (each warmed up for 2 s, then measured; every round runs them all, the table shows the
best round and the spread):
  ours single    POST /api/v1/customers/{id}/debits over 10,000 customers, unique Idempotency-Key
  ours hot       the same, every request on one customer
  ours batch N   POST /api/v1/debits/batch with N items of random customers (N = 100, 1,000)
  (a) pgbench    bench/pgbench_debit.sql: the SQL statements our debit issues, same clients
  (b) bare Flask bench/baseline_app.py: the account UPDATE and one INSERT, same clients and gunicorn
The load comes from wrk (Debian's package) with a Lua script, or from the Python generator in
bench/common.py when wrk is missing. After our runs `services.ledger.reconcile` must find the ledger
consistent (the baseline writes to copies of the tables, so it does not disturb that).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine, text  # noqa: E402

from bench import common  # noqa: E402
from bench.common import Figure, Load  # noqa: E402

HERE = Path(__file__).resolve().parent
CREDITS = 10**12 // 2  # per customer: never runs out


def baseline_tables(url: str) -> None:
    """bench_accounts / bench_entries: same columns, indexes, defaults and keys as the real ones."""
    with create_engine(url).begin() as c:
        c.execute(text("CREATE TABLE bench_accounts (LIKE accounts INCLUDING ALL)"))
        c.execute(text("INSERT INTO bench_accounts SELECT * FROM accounts"))
        c.execute(text("ALTER TABLE bench_accounts ADD FOREIGN KEY (customer_id) REFERENCES customers"))
        c.execute(text("CREATE TABLE bench_entries (LIKE ledger_entries INCLUDING ALL)"))
        c.execute(text("ALTER TABLE bench_entries ADD FOREIGN KEY (account_id) REFERENCES bench_accounts"))
        c.execute(text("ALTER TABLE bench_entries ADD FOREIGN KEY (customer_id) REFERENCES customers"))


def api_key_prefix(plain: str) -> str:
    return plain.split("_")[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, default=10_000)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--batch-clients", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--worker-class", default="gthread", choices=["gthread", "sync"])
    ap.add_argument("--threads", type=int, default=3)
    ap.add_argument("--batches", default="100,1000", help="batch sizes, comma-separated ('' for none)")
    ap.add_argument("--only", default="ours,a,b", help="which of ours,a,b to run")
    ap.add_argument("--scenarios", default="single,hot,batch", help="which of single,hot,batch to run")
    ap.add_argument("--engine", choices=["wrk", "python"], default=None)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, 1 s runs, one round")
    args = ap.parse_args(argv)
    if args.smoke:
        args.customers, args.seconds, args.rounds, args.clients = 50, 1, 1, 4
        args.batch_clients, args.batches = 2, "10"
    only = set(args.only.split(","))
    scenarios = set(args.scenarios.split(","))
    batches = [int(b) for b in args.batches.split(",") if b] if "batch" in scenarios else []
    warm = 0 if args.smoke else 2.0
    env = {"WEB_CONCURRENCY": str(args.workers)}

    with common.database("debits") as url:
        print(f"loading {args.customers:,} customers ...", flush=True)
        customers = common.load_customers(url, customers=args.customers, credits=CREDITS)
        common.feature_prices(url)
        key = common.api_key(url)
        baseline_tables(url)
        common.analyze(url)
        hot = customers[0]
        server_args = dict(url=url, workers=args.workers, worker_class=args.worker_class,
                           threads=args.threads, env=env)
        runs: dict[str, list[Figure]] = {}

        def add(fig: Figure) -> None:
            runs.setdefault(fig.name, []).append(fig)

        for rnd in range(args.rounds):
            print(f"round {rnd + 1}/{args.rounds}", flush=True)
            if "ours" in only:
                with common.gunicorn("wsgi:app", **server_args) as srv:
                    common.warm(srv)
                    if "single" in scenarios:
                        single = Load("debit", api_key=key, customers=customers)
                        add(common.run_load(srv, single, name="ours single", clients=args.clients,
                                            seconds=args.seconds, warmup=warm, engine=args.engine))
                    for n in batches:
                        add(common.run_load(srv, Load("batch", api_key=key, customers=customers, batch=n),
                                            name=f"ours batch {n}", clients=args.batch_clients,
                                            seconds=args.seconds, warmup=warm, engine=args.engine))
                if "hot" in scenarios:
                    # One customer at full speed is exactly what API_CUSTOMER_RATE_LIMIT (600 a
                    # minute) stops; this scenario measures the row-lock path, so its server runs
                    # with that one limit off. Every other scenario runs the shipped defaults.
                    hot_env = {**env, "API_CUSTOMER_RATE_LIMIT": "off"}
                    with common.gunicorn("wsgi:app", **{**server_args, "env": hot_env}) as srv:
                        common.warm(srv)
                        hot_load = Load("debit", api_key=key, customers=customers, hot=hot)
                        add(common.run_load(srv, hot_load, name="ours hot customer", clients=args.clients,
                                            seconds=args.seconds, warmup=warm, engine=args.engine))
            if "b" in only:
                with common.gunicorn("bench.baseline_app:app", **server_args) as srv:
                    common.warm(srv)
                    if "single" in scenarios:
                        add(common.run_load(srv, Load("baseline", customers=customers),
                                            name="(b) bare Flask single", clients=args.clients,
                                            seconds=args.seconds, warmup=warm, engine=args.engine))
                    if "hot" in scenarios:
                        add(common.run_load(srv, Load("baseline", customers=customers, hot=hot),
                                            name="(b) bare Flask hot", clients=args.clients,
                                            seconds=args.seconds, warmup=warm, engine=args.engine))
            if "a" in only:
                pv = {"nc": args.customers, "prefix": api_key_prefix(key)}
                if scenarios & {"single", "batch"}:
                    add(common.pgbench(url, HERE / "pgbench_debit.sql", name="(a) pgbench single",
                                       clients=args.clients, seconds=args.seconds, variables=pv,
                                       warmup=warm))
                if "hot" in scenarios:
                    add(common.pgbench(url, HERE / "pgbench_debit.sql", name="(a) pgbench hot",
                                       clients=args.clients, seconds=args.seconds,
                                       variables={**pv, "nc": 1}, warmup=warm))
        consistent = common.reconcile(url)

    figs = {name: common.best(rs) for name, rs in runs.items()}
    threads = f" ({args.threads} threads)" if args.worker_class == "gthread" else ""
    common.print_table(list(figs.values()),
                       f"API debits: {args.customers:,} customers, gunicorn {args.workers} x "
                       f"{args.worker_class}{threads}, {args.seconds:g} s runs")
    ratios(figs)
    return 0 if consistent else 1


RATIOS = [  # label, numerator, denominator, attribute, target
    ("ours single / (b) bare Flask single", "ours single", "(b) bare Flask single", "per_second", ">= 0.70"),
    ("p99 of ours single / p99 of (b)", "ours single", "(b) bare Flask single", "p99_ms", "<= 1.5"),
    ("ours single / (a) pgbench single", "ours single", "(a) pgbench single", "per_second", ""),
    ("ours hot / (a) pgbench hot", "ours hot customer", "(a) pgbench hot", "per_second", ">= 0.50"),
    ("ours hot / (b) bare Flask hot", "ours hot customer", "(b) bare Flask hot", "per_second", ""),
]


def ratios(f: dict[str, Figure]) -> None:
    rows = list(RATIOS)
    for name in sorted((k for k in f if k.startswith("ours batch")), key=lambda k: int(k.split()[-1])):
        rows.append((f"{name} / (a) pgbench single", name, "(a) pgbench single", "per_second", "> 1"))
    print("\nratios (debits per second unless said)")
    for label, a, b, attr, target in rows:
        if a in f and b in f and getattr(f[b], attr):
            value = f"{getattr(f[a], attr) / getattr(f[b], attr):.2f}"
        else:
            value = "n/a"
        print(f"  {label:<40} {value:>6}   {('target ' + target) if target else ''}")


if __name__ == "__main__":
    sys.exit(main())
