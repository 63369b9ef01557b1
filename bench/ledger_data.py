"""Large, consistent ledgers fast: simulated with the ledger rules, written with COPY/executemany.

Used by the finance tests (200,000 entries) and bench/export.py, bench/analytics.py (1,000,000).
The history is simulated in memory by services.demo.dataset.Sim (the ledger's own draw order, refunds
back to the buckets they came from, expiry of due promotional credits, every entry fully
allocated, balance chains), then written straight through the driver: COPY on PostgreSQL,
executemany on SQLite. `flask reconcile` passes on the result.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import random
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import JSON, DateTime, func, select, text

from models import (
    Account,
    Allocation,
    CreditGrant,
    Customer,
    FeaturePrice,
    LedgerEntry,
    Payment,
    Refund,
    db,
    utcnow,
)
from services.demo.dataset import FEATURES, INR_PER_USD, PACKAGES, Sim

TABLES = {"customers": Customer.__table__, "accounts": Account.__table__,
          "payments": Payment.__table__, "credit_grants": CreditGrant.__table__,
          "ledger_entries": LedgerEntry.__table__, "allocations": Allocation.__table__,
          "refunds": Refund.__table__}


def _next_ids(s) -> dict[str, int]:
    def top(model):
        return s.scalar(select(func.coalesce(func.max(model.id), 0)))
    return {"customer": top(Customer), "account": top(Account), "payment": top(Payment),
            "entry": top(LedgerEntry), "alloc": top(Allocation), "grant": top(CreditGrant),
            "refund": top(Refund)}


class Data:
    """Rows of every table, in insert order, with the simulator that made them."""

    def __init__(self, s):
        ids = _next_ids(s)
        self.sim = Sim({"entry": ids["entry"], "alloc": ids["alloc"], "grant": ids["grant"]})
        self.cid, self.aid, self.pid = ids["customer"], ids["account"], ids["payment"]
        self.rid = ids["refund"]
        self.customers: list[dict] = []
        self.accounts: list[dict] = []
        self.payments: list[dict] = []
        self.refunds: list[dict] = []
        self.extra_entries: Iterable[dict] = ()  # rows made without the simulator
        self.extra_allocs: Iterable[dict] = ()
        self.extra_versions: dict[int, int] = {}

    def customer(self, at: datetime, *, name: str | None = None, email: str | None = None) -> tuple[int, int]:
        self.cid += 1
        self.aid += 1
        n = self.cid
        self.customers.append(dict(id=n, external_id=f"bulk_{n}", email=email or f"bulk{n}@example.com",
                                   name=name or f"Bulk Customer {n}", plan_id=None,
                                   subscription_status="none", subscription_provider=None,
                                   subscription_id=None, current_period_end=None,
                                   subscription_event_at=None, created_at=at, updated_at=at,
                                   deleted_at=None))
        self.accounts.append(dict(id=self.aid, customer_id=n, balance=0, version=0, updated_at=at))
        return n, self.aid

    def purchase(self, cid: int, aid: int, at: datetime, *, credits: int, amount_minor: int,
                 currency: str = "USD", provider: str = "stripe") -> dict:
        self.pid += 1
        ref = hashlib.sha256(f"bulk:{self.pid}".encode()).hexdigest()[:14]
        pay = dict(id=self.pid, customer_id=cid, provider=provider, kind="package",
                   provider_order_id=f"order_bulk_{ref}", provider_payment_id=f"pay_bulk_{ref}",
                   package_id=None, plan_id=None, amount_minor=amount_minor, currency=currency,
                   credits=credits, status="paid", refunded_minor=0, metadata=None,
                   created_at=at, paid_at=at)
        self.payments.append(pay)
        self.sim.grant(aid, cid, at, credits, "purchase", cost_minor=amount_minor,
                       currency=currency, payment_id=pay["id"],
                       key=f"payment:{provider}:{pay['provider_payment_id']}",
                       actor_type="webhook", reason=f"purchase via {provider}")
        return pay

    def finish(self) -> None:
        """Balances and versions of the accounts from the simulated entries."""
        for a in self.accounts:
            posted = self.sim.accounts.get(a["id"], {"balance": 0, "version": 0})
            a["balance"] = posted["balance"]
            a["version"] = posted["version"] + self.extra_versions.get(a["id"], 0)

    def rows(self):
        """(table, rows) in foreign-key order, every column present."""
        grant_cols = [c.name for c in CreditGrant.__table__.columns]
        grants = [{c: getattr(g, c, None) for c in grant_cols} for g in self.sim.grants]
        for g in grants:
            g["cost_minor"] = g["cost_minor"] or 0
        entry_cols = [c.name for c in LedgerEntry.__table__.columns]
        entries = ({c: e.get(c) for c in entry_cols} for e in self.sim.entries)
        return [("customers", self.customers), ("accounts", self.accounts),
                ("payments", self.payments), ("credit_grants", grants),
                ("ledger_entries", itertools.chain(entries, self.extra_entries)),
                ("allocations", itertools.chain(self.sim.allocs, self.extra_allocs)),
                ("refunds", self.refunds)]


def write(s, data: Data) -> None:
    """Insert everything in the session's transaction (COPY on PostgreSQL) and commit."""
    data.finish()
    conn = s.connection()
    pg = conn.dialect.name == "postgresql"
    for name, rows in data.rows():
        table = TABLES[name]
        cols = [c.name for c in table.columns]
        conv = [_converter(table.c[c], pg) for c in cols]
        names = ", ".join(f'"{c}"' for c in cols)

        def values(r, cols=cols, conv=conv):
            return tuple(v if f is None or v is None else f(v)
                         for f, v in zip(conv, map(r.get, cols), strict=True))

        if pg:
            raw = conn.connection.driver_connection
            with raw.cursor() as cur, cur.copy(f"COPY {name} ({names}) FROM STDIN") as cp:
                for r in rows:
                    cp.write_row(values(r))
        else:
            sql = f"INSERT INTO {name} ({names}) VALUES ({', '.join('?' for _ in cols)})"
            batch = []
            for r in rows:
                batch.append(values(r))
                if len(batch) >= 20000:
                    conn.exec_driver_sql(sql, batch)
                    batch = []
            if batch:
                conn.exec_driver_sql(sql, batch)
    if pg:
        for name in TABLES:
            s.execute(text(f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                           f"COALESCE((SELECT MAX(id) FROM {name}), 0) + 1, false)"))
    s.commit()


def _converter(column, pg: bool):
    """How a Python value of this column goes to the driver (None: as it is)."""
    if isinstance(column.type, JSON):
        return json.dumps
    if not pg and isinstance(column.type, DateTime):
        return lambda v: v.strftime("%Y-%m-%d %H:%M:%S.%f")  # SQLAlchemy's SQLite format
    return None


def ensure_features(s) -> None:
    """The demo's feature prices (with provider costs), when missing."""
    have = set(s.scalars(select(FeaturePrice.feature)))
    for f, label, unit, credits, cost, _w in FEATURES:
        if f not in have:
            s.add(FeaturePrice(feature=f, label=label, unit=unit, credits_per_unit=credits,
                               provider_cost_micros=cost, currency="USD"))
    s.commit()


def one_customer_many_debits(s, *, debits: int, start: datetime | None = None,
                             step: timedelta = timedelta(seconds=1),
                             features: tuple[str, ...] = ("chat",), reference: str | None = None,
                             key: str = "bulk", name: str | None = None,
                             email: str | None = None) -> int:
    """One customer with one purchase of `debits` credits and `debits` debits of one credit,
    `step` apart (debit i is of features[i % len(features)]). Rows are computed directly
    (no simulator): 200,000 debits in seconds."""
    start = (start or utcnow() - step * (debits + 60)).replace(microsecond=0)
    data = Data(s)
    cid, aid = data.customer(start, name=name, email=email)
    data.purchase(cid, aid, start, credits=debits, amount_minor=debits)
    grant_id = data.sim.grants[-1].id
    sim = data.sim
    first_entry, first_alloc = sim.next["entry"] + 1, sim.next["alloc"] + 1
    sim.next["entry"] += debits
    sim.next["alloc"] += debits
    data.extra_entries = (dict(id=first_entry + i, account_id=aid, customer_id=cid, type="debit",
                               amount=-1, balance_before=debits - i, balance_after=debits - i - 1,
                               actor_type="api_key", actor_id="1", feature=features[i % len(features)],
                               quantity=1, reference=reference, idempotency_key=f"{key}:{cid}:{i}",
                               created_at=start + step * (i + 1))
                          for i in range(debits))
    data.extra_allocs = (dict(id=first_alloc + i, entry_id=first_entry + i, grant_id=grant_id,
                              credits=-1) for i in range(debits))
    sim.grants[-1].remaining = 0
    sim.account(aid, cid)["balance"] = 0
    data.extra_versions = {aid: debits}
    write(s, data)
    return cid


def realistic(s, *, entries: int, days: int = 180, seed: int = 11,
              now: datetime | None = None) -> dict:
    """About `entries` ledger entries over `days` days: customers with a welcome bonus (expiring),
    monthly promotional credits, purchases in USD and INR with payments, feature debits, task
    refunds, a few claw-backs. Returns counts."""
    rng = random.Random(seed)
    now = (now or utcnow()).replace(microsecond=0)
    start = now - timedelta(days=days)
    ensure_features(s)
    data = Data(s)
    sim = data.sim
    names = [f[0] for f in FEATURES]
    weights = [f[5] for f in FEATURES]
    price = {f[0]: f[3] for f in FEATURES}
    per_customer = 200
    customers = max(1, entries * 101 // 100 // per_customer)  # a few debits find no credits
    for _ in range(customers):
        joined = start + timedelta(seconds=rng.randint(0, days * 86400 // 3))
        cid, aid = data.customer(joined)
        sim.grant(aid, cid, joined, 100, "promo", expires_at=joined + timedelta(days=30),
                  reason="Welcome bonus", key=f"welcome:{cid}")
        t = joined
        month = joined + timedelta(days=30)
        span = (now - joined).total_seconds()
        step = span / per_customer
        made = 1
        while made < per_customer:
            t = t + timedelta(seconds=rng.uniform(0.2, 1.8) * step)
            if t >= now:
                break
            if t >= month:
                sim.grant(aid, cid, month, 50, "distribution", expires_at=month + timedelta(days=31),
                          key=f"bulkdist:{cid}:{month:%Y-%m-%d}", reason="Monthly credits",
                          actor_type="job")
                month += timedelta(days=30)
                made += 1
                continue
            if sim.account(aid, cid)["balance"] < 60 or rng.random() < 0.01:
                pkg = rng.choices(PACKAGES, weights=[40, 35, 18, 7])[0]
                inr = rng.random() < 0.3
                pay = data.purchase(cid, aid, t, credits=pkg[2],
                                    amount_minor=pkg[3] * (INR_PER_USD if inr else 1),
                                    currency="INR" if inr else "USD",
                                    provider="razorpay" if inr else "stripe")
                made += 1
                if rng.random() < 0.01:  # refunded a day later: unused credits clawed back
                    g = sim.grants[-1]
                    take = min(g.remaining, pkg[2] // 2)
                    if take > 0:
                        at = t + timedelta(hours=1)
                        e = sim.clawback(g, at, take, reason="refund", payment_id=pay["id"])
                        amount = pay["amount_minor"] * take // g.amount
                        pay["refunded_minor"] = amount
                        pay["status"] = "partially_refunded"
                        data.rid += 1
                        n = data.rid
                        data.refunds.append(dict(
                            id=n, payment_id=pay["id"], customer_id=cid, status="processed",
                            credits=take, amount_minor=amount, currency=pay["currency"],
                            reason="customer asked", idempotency_key=f"bulk_refund_{seed}_{n}",
                            provider_refund_id=f"re_bulk_{seed}_{n}", clawback_entry_id=e["id"],
                            attempts=1, created_at=at, updated_at=at, processed_at=at))
                        made += 1
                continue
            feature = rng.choices(names, weights=weights)[0]
            qty = rng.randint(1, 4) if feature == "chat" else 1
            credits = price[feature] * qty
            e = sim.debit(aid, cid, t, credits, feature=feature, quantity=qty,
                          reference=f"project:{rng.randint(1, 5000)}" if feature != "chat" else None)
            if e is None:
                continue
            made += 1
            if feature in ("video", "lip-sync") and rng.random() < 0.1:
                sim.refund(e, t + timedelta(seconds=90), credits, reason="task failed")
                made += 1
    for a in data.accounts:
        sim.expire_due(a["id"], a["customer_id"], now)
    write(s, data)
    return {"customers": len(data.customers), "entries": len(sim.entries),
            "allocations": len(sim.allocs), "payments": len(data.payments)}


def database_counts() -> dict:
    s = db.session
    return {"entries": s.scalar(select(func.count(LedgerEntry.id))),
            "customers": s.scalar(select(func.count(Customer.id)))}
