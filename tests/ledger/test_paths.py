"""One posting rule: the general path, the hot path and the batch path write the same rows.

The same random history (grants with and without expiry, some already past it, debits of random
size, some refused) is played for three customers, each debit through another path:
- general: `posting.debit` with the hot path declining (the ORM path every other movement takes);
- hot: `posting.debit`, which tries the three-statement hot path first;
- batch: `batch.debit_many` with the item alone.
Entries, allocations, buckets, the account, the balance notices written to the outbox and the
auto top-up attempts (services.ledger.crossings) must then be identical up to ids.
"""
from __future__ import annotations

import hashlib
import os
import random
from datetime import timedelta

import pytest
from sqlalchemy import select

from models import (
    Account,
    Allocation,
    AutoTopup,
    AutoTopupAttempt,
    CreditGrant,
    Customer,
    LedgerEntry,
    OutboxEvent,
    db,
    utcnow,
)
from services.core.errors import InsufficientCredits
from services.ledger import batch, reconcile
from services.ledger import posting as ledger


def _general(c, credits: int, key: str) -> None:
    with pytest.MonkeyPatch.context() as mp:
        # The hot path answers None when it declines; declining always is the general path.
        mp.setattr(ledger, "fast_debit", lambda s, **kw: None)
        ledger.debit(customer_id=c.id, credits=credits, feature="chat", key=key)


def _hot(c, credits: int, key: str) -> None:
    ledger.debit(customer_id=c.id, credits=credits, feature="chat", key=key)


def _batch(c, credits: int, key: str) -> None:
    [res] = batch.debit_many([batch.Item(customer=c.external_id, feature="chat",
                                         idempotency_key=key, credits=credits)])
    if not res["success"]:
        assert res["code"] == "INSUFFICIENT_CREDITS", res
        raise InsufficientCredits(res["error"])


PATHS = {"general": _general, "hot": _hot, "batch": _batch}


def _history(rng: random.Random, steps: int) -> list[tuple]:
    ops = []
    for _ in range(steps):
        if rng.random() < 0.35:
            days = rng.choice([None, None, 30, 3, -2, -0.5])  # negative: already past expiry
            ops.append(("grant", rng.randint(1, 60), days, rng.choice(["promo", "purchase"])))
        else:
            ops.append(("debit", rng.randint(1, 45)))
    return ops


def _rows(customer_id: int) -> dict:
    """Everything the ledger wrote for one customer, with ids replaced by their order."""
    db.session.expire_all()
    entries = db.session.scalars(select(LedgerEntry).where(LedgerEntry.customer_id == customer_id)
                                 .order_by(LedgerEntry.id)).all()
    grants = db.session.scalars(select(CreditGrant).where(CreditGrant.customer_id == customer_id)
                                .order_by(CreditGrant.id)).all()
    e_ord = {e.id: i for i, e in enumerate(entries)}
    g_ord = {g.id: i for i, g in enumerate(grants)}
    allocs = db.session.scalars(select(Allocation).where(Allocation.entry_id.in_(list(e_ord)))
                                .order_by(Allocation.entry_id, Allocation.grant_id)).all()
    account = db.session.scalar(select(Account).where(Account.customer_id == customer_id))
    external_id = db.session.get(Customer, customer_id).external_id
    events = db.session.scalars(select(OutboxEvent).where(OutboxEvent.customer_id == customer_id)
                                .order_by(OutboxEvent.id)).all()
    assert all(ev.data.pop("external_id") == external_id for ev in events)
    for ev in events:  # grant ids by their order, like the rows below
        if "grant_id" in ev.data:
            ev.data["grant_id"] = g_ord[ev.data["grant_id"]]
    attempts = db.session.scalars(select(AutoTopupAttempt).where(
        AutoTopupAttempt.customer_id == customer_id).order_by(AutoTopupAttempt.id)).all()
    return {
        "events": [(ev.type, ev.data) for ev in events],
        "attempts": [(a.status, a.balance_at_trigger, e_ord[int(a.key.rsplit(":", 1)[1])])
                     for a in attempts],
        "entries": [(e.type, e.amount, e.balance_before, e.balance_after, e.feature,
                     g_ord.get(e.grant_id), e.actor_type) for e in entries],
        "allocations": [(e_ord[a.entry_id], g_ord[a.grant_id], a.credits) for a in allocs],
        "grants": [(g.source, g.amount, g.remaining, g.expired_at is not None) for g in grants],
        "account": (account.balance, account.version),
    }


def _seed(n: int) -> int:
    """History n's seed: LEDGER_PATHS_SEED replays one; else new every run, and the same in every
    xdist worker of a run (they must collect identical test ids)."""
    if os.environ.get("LEDGER_PATHS_SEED"):
        return int(os.environ["LEDGER_PATHS_SEED"])
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID") or str(os.getpid())
    return int(hashlib.sha256(f"{run}:{n}".encode()).hexdigest(), 16) % 10**6


@pytest.mark.parametrize("history", range(4))
def test_the_three_debit_paths_write_identical_rows(app, make, history):
    seed = _seed(history)
    print(f"seed={seed} (LEDGER_PATHS_SEED={seed} replays it)")
    rng = random.Random(seed)
    ops = _history(rng, 40)
    customers = {name: make.customer(external_id=f"{name}-{seed}") for name in PATHS}
    # Thresholds the random balances cross often: notices and auto top-ups on every path.
    low, topup = rng.choice([10, 25, 40]), rng.choice([5, 15, 30])
    package = make.package()
    for c in customers.values():
        c.low_balance_threshold = low
        db.session.add(AutoTopup(customer_id=c.id, enabled=True, threshold=topup,
                                 package_id=package.id, monthly_limit=1000))
    db.session.commit()
    now = utcnow()
    refused = dict.fromkeys(PATHS, 0)
    for i, op in enumerate(ops):
        for name, c in customers.items():
            if op[0] == "grant":
                _, credits, days, source = op
                expires = None if days is None else now + timedelta(days=days)
                ledger.grant(customer_id=c.id, credits=credits, source=source, expires_at=expires,
                             reason="history")
            else:
                try:
                    PATHS[name](c, op[1], key=f"{name}-{seed}-{i}")
                except InsufficientCredits:
                    refused[name] += 1
        # The payment side settles each attempt, so that the next crossing may trigger again.
        db.session.execute(AutoTopupAttempt.__table__.update().values(status="succeeded"))
        db.session.commit()
    assert len(set(refused.values())) == 1, refused
    rows = {name: _rows(c.id) for name, c in customers.items()}
    assert rows["hot"] == rows["general"], f"seed={seed}"
    assert rows["batch"] == rows["general"], f"seed={seed}"
    assert any(t == "debit" for t, *_ in rows["general"]["entries"])
    print({t: sum(1 for e in rows["general"]["events"] if e[0] == t)
           for t in ("credits.low_balance", "credits.depleted")},
          "attempts", len(rows["general"]["attempts"]))
    assert reconcile.run().ok
