"""Concurrent debits never overspend, and one idempotency key makes one entry."""
import multiprocessing
import threading

import pytest
from sqlalchemy import func, select

from models import LedgerEntry, db
from services.core.errors import IdempotencyConflict
from services.ledger import posting as ledger
from services.ledger import reconcile
from tests.ledger.concurrency_worker import debit_storm


@pytest.mark.pg
def test_1000_debits_from_8_processes_x_25_threads(pg_app, factory):
    c = factory.customer(credits=1000)
    url = pg_app.config["SQLALCHEMY_DATABASE_URI"]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(8) as pool:
        results = pool.starmap(debit_storm, [(url, c.id, 25, 5, 7)] * 8)
    db.session.rollback()
    ok = sum(r["ok"] for r in results)
    refused = sum(r["insufficient"] for r in results)
    errors = [e for r in results for e in r["errors"]]
    print(f"\n8 processes x 25 threads: {ok} debits succeeded, {refused} refused, "
          f"{len(errors)} errors, final balance {ledger.balance(c.id)}")
    assert errors == []
    assert (ok, refused) == (142, 858)
    assert ledger.balance(c.id) == 6
    lowest = db.session.scalar(select(func.min(LedgerEntry.balance_after))
                               .where(LedgerEntry.customer_id == c.id))
    assert lowest == 6
    assert reconcile.run().ok


def test_sqlite_threads_never_see_database_is_locked(sqlite_app, factory):
    c = factory.customer(credits=1000)
    url = sqlite_app.config["SQLALCHEMY_DATABASE_URI"]
    out = debit_storm(url, c.id, threads=8, per_thread=25, credits=7, pool_size=8)
    db.session.rollback()  # end this thread's snapshot (SQLite WAL) before reading the result
    assert out["errors"] == [], out["errors"][:1]
    assert (out["ok"], out["insufficient"]) == (142, 58)
    assert ledger.balance(c.id) == 6 and reconcile.run().ok


def test_50_concurrent_calls_with_one_key_make_one_entry(app, make):
    cid = make.customer(credits=500).id  # threads must not touch this thread's ORM objects
    results, errors = [], []
    start = threading.Barrier(50)

    def call():
        with app.app_context():
            start.wait()
            try:
                e = ledger.debit(customer_id=cid, credits=9, feature="image", key="one-key")
                results.append((e.id, e.amount, e.balance_after))
            except Exception as err:  # collected; the test fails on any
                errors.append(repr(err))
            finally:
                db.session.remove()

    threads = [threading.Thread(target=call) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    db.session.rollback()  # end this thread's snapshot (SQLite WAL) before reading the result
    assert errors == [], errors[0]
    assert len(results) == 50 and len(set(results)) == 1
    assert db.session.scalar(select(func.count(LedgerEntry.id)).where(
        LedgerEntry.idempotency_key == "one-key")) == 1
    assert ledger.balance(cid) == 491
    with pytest.raises(IdempotencyConflict):
        ledger.debit(customer_id=cid, credits=10, feature="image", key="one-key")
    assert ledger.balance(cid) == 491
    assert db.session.scalar(select(func.count(LedgerEntry.id)).where(
        LedgerEntry.customer_id == cid)) == 2
