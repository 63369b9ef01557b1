"""API debits with 1 and with 2 gunicorn replicas sharing one PostgreSQL and one Redis.

    .venv/bin/python bench/replicas.py                  # 10,000 customers, 16 clients, 10 s runs
    .venv/bin/python bench/replicas.py --smoke          # tiny and short: proves the script runs

Each replica is a gunicorn master from the project's gunicorn.conf.py settings (`--workers`
workers each), on its own port, with the shipped defaults (rate limits counted in the shared
Redis). With two replicas the same total number of wrk connections is split between them and
both loads run at the same time; the figure is the sum of both, its p99 the worse of the two.
Next to them, in the same run, pgbench plays the same SQL with the same clients: the database's
own ceiling, which no number of replicas passes. `docs/scaling.md` reads these figures.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402
from bench.api_debits import CREDITS, api_key_prefix  # noqa: E402
from bench.common import Figure, Load  # noqa: E402

HERE = Path(__file__).resolve().parent


def together(servers: list, load: Load, *, name: str, clients: int, seconds: float,
             warmup: float) -> Figure:
    """The load split over the servers, run at the same time; one summed Figure."""
    share = max(1, clients // len(servers))
    with ThreadPoolExecutor(len(servers)) as pool:
        figs = list(pool.map(lambda srv: common.run_load(srv, load, name=name, clients=share,
                                                         seconds=seconds, warmup=warmup),
                             servers))
    total = Figure(name=name, requests=sum(f.requests for f in figs),
                   seconds=max(f.seconds for f in figs), errors=sum(f.errors for f in figs),
                   p50_ms=max(f.p50_ms for f in figs), p95_ms=max(f.p95_ms for f in figs),
                   p99_ms=max(f.p99_ms for f in figs))
    total.note = f"{len(servers)} x {share} clients"
    return total


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, default=10_000)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=3, help="gunicorn workers per replica")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args(argv)
    if args.smoke:
        args.customers, args.seconds, args.rounds, args.clients = 50, 1, 1, 4
    warm = 0 if args.smoke else 2.0
    runs: dict[str, list[Figure]] = {}

    with common.database("replicas") as url:
        print(f"loading {args.customers:,} customers ...", flush=True)
        customers = common.load_customers(url, customers=args.customers, credits=CREDITS)
        common.feature_prices(url)
        key = common.api_key(url)
        common.analyze(url)
        single = Load("debit", api_key=key, customers=customers)
        hot = Load("debit", api_key=key, customers=customers, hot=customers[0])
        server_args = dict(url=url, workers=args.workers, env={"WEB_CONCURRENCY": str(args.workers)})
        hot_env = {"WEB_CONCURRENCY": str(args.workers), "API_CUSTOMER_RATE_LIMIT": "off"}
        for rnd in range(args.rounds):
            print(f"round {rnd + 1}/{args.rounds}", flush=True)
            for n in (1, 2):
                for name, load, env in ((f"{n} replica(s), single", single, server_args["env"]),
                                        (f"{n} replica(s), hot customer", hot, hot_env)):
                    with contextlib.ExitStack() as stack:
                        servers = [stack.enter_context(common.gunicorn(
                            "wsgi:app", **{**server_args, "env": env})) for _ in range(n)]
                        for srv in servers:
                            common.warm(srv)
                        runs.setdefault(name, []).append(together(
                            servers, load, name=name, clients=args.clients, seconds=args.seconds,
                            warmup=warm))
            pv = {"nc": args.customers, "prefix": api_key_prefix(key)}
            runs.setdefault("pgbench single (database ceiling)", []).append(common.pgbench(
                url, HERE / "pgbench_debit.sql", name="pgbench single (database ceiling)",
                clients=args.clients, seconds=args.seconds, variables=pv, warmup=warm))
            runs.setdefault("pgbench hot (row-lock ceiling)", []).append(common.pgbench(
                url, HERE / "pgbench_debit.sql", name="pgbench hot (row-lock ceiling)",
                clients=args.clients, seconds=args.seconds, variables={**pv, "nc": 1}, warmup=warm))
        consistent = common.reconcile(url)

    figs = {name: common.best(rs) for name, rs in runs.items()}
    common.print_table(list(figs.values()), f"API debits, 1 and 2 replicas x {args.workers} "
                       f"workers, {args.customers:,} customers, {args.clients} clients in all, "
                       f"best of {args.rounds}")
    for kind in ("single", "hot customer"):
        one, two = figs.get(f"1 replica(s), {kind}"), figs.get(f"2 replica(s), {kind}")
        if one and two and one.rps:
            print(f"{kind}: 2 replicas / 1 replica = {two.rps / one.rps:.2f}")
    print(f"ledger consistent after the runs: {consistent}")
    errors = sum(f.errors for f in figs.values())
    return 0 if consistent and (args.smoke or errors == 0) else 1


if __name__ == "__main__":
    sys.exit(main())
