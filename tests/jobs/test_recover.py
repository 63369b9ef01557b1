"""recover_timeouts and expire_credits as jobs: concurrent sweepers, exactly-once effects."""
from __future__ import annotations

import random
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text

from jobs import recover_timeouts
from jobs import run as run_job
from models import CreditGrant, JobRun, LedgerEntry, Task, db, utcnow
from services.core import settings as app_settings
from services.ledger import expiry, reconcile
from services.ledger import posting as ledger
from services.tasks import prepaid as tasks


@pytest.mark.slow  # 500 tasks through the ORM settle path: ~15-40 s depending on the machine's load
def test_three_sweepers_refund_each_of_500_overdue_tasks_once(app, make):
    seed = random.randrange(1_000_000)
    print(f"seed={seed}")
    rng = random.Random(seed)
    t0 = time.perf_counter()
    customers = [make.customer(credits=10_000) for _ in range(25)]
    expected = {c.id: 10_000 for c in customers}
    for k in range(520):
        c = customers[k % len(customers)]
        t = tasks.create(customer_id=c.id, type="video", estimated_credits=rng.randint(1, 40))
        if k >= 500:  # 20 tasks still within their deadline: not touched
            expected[c.id] -= t.charged_credits
        elif k % 3 == 0:
            tasks.start(task_id=t.id, provider="fake")
    db.session.execute(text("UPDATE tasks SET deadline_at = :past WHERE id IN "
                            "(SELECT id FROM tasks ORDER BY id LIMIT 500)"),
                       {"past": utcnow() - timedelta(minutes=5)})
    db.session.commit()

    print(f"setup {time.perf_counter() - t0:.1f} s")
    barrier = threading.Barrier(3)
    errors: list[BaseException] = []

    def sweep(k: int) -> None:
        with app.app_context():
            try:
                barrier.wait()
                recover_timeouts.run(period=f"sweep-{k}", trigger="manual")
            except BaseException as err:  # reported below
                errors.append(err)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=sweep, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"sweep {time.perf_counter() - t0:.1f} s")
    assert errors == []
    db.session.expire_all()
    runs = db.session.scalars(select(JobRun).order_by(JobRun.id)).all()
    assert [r.status for r in runs] == ["succeeded"] * 3
    assert sum(r.processed_count for r in runs) == 500
    statuses = dict(db.session.execute(select(Task.status, func.count()).group_by(Task.status)).all())
    assert statuses.get("timed_out") == 500
    refunds = db.session.execute(select(LedgerEntry.task_id, func.count()).where(
        LedgerEntry.type == "refund").group_by(LedgerEntry.task_id)).all()
    assert len(refunds) == 500 and all(n == 1 for _, n in refunds)
    assert {c.id: ledger.balance(c.id) for c in customers} == expected
    assert reconcile.run().ok

    # A second sweep finds nothing to do.
    again = recover_timeouts.run(period="sweep-again", trigger="manual")
    assert again.processed_count == 0
    assert db.session.scalar(select(func.count()).select_from(LedgerEntry)
                             .where(LedgerEntry.type == "refund")) == 500


def test_expire_credits_job_expires_each_due_grant_once_by_the_ledger_rules(app, make):
    app_settings.update(key="expiry_grace_hours", value=2)
    c = make.customer()
    due = make.grant(c, credits=30, expires_in_days=-1)
    in_grace = make.grant(c, credits=20, expires_in_days=-1 / 24)       # expired 1 h ago, 2 h grace
    paid = make.grant(c, credits=40, expires_in_days=-3, source="purchase")  # paid never expires
    live = make.grant(c, credits=10, expires_in_days=5)
    assert expiry.due_summary() == {"grants": 1, "credits": 30, "accounts": 1}

    run = run_job("expire_credits", trigger="manual")
    assert (run.status, run.processed_count) == ("succeeded", 1)
    assert run.details == {"grants": 1, "credits": 30, "accounts": 1}
    for g in (due, in_grace, paid, live):
        db.session.refresh(g)
    assert (due.remaining, in_grace.remaining, paid.remaining, live.remaining) == (0, 20, 40, 10)
    entry = db.session.scalar(select(LedgerEntry).where(LedgerEntry.type == "expiry"))
    assert (entry.amount, entry.grant_id, entry.job_run_id) == (-30, due.id, run.id)
    assert ledger.balance(c.id) == 70

    # Another hour's run: nothing more is due; the grace period ends later.
    assert run_job("expire_credits", period="next-hour", trigger="manual").processed_count == 0
    assert db.session.scalar(select(func.count()).select_from(LedgerEntry)
                             .where(LedgerEntry.type == "expiry")) == 1
    app_settings.update(key="paid_credits_never_expire", value=False)
    app_settings.update(key="expiry_grace_hours", value=0)
    assert expiry.run_pass().grants == 2  # now the paid and the formerly in-grace buckets
    assert db.session.scalar(select(func.sum(CreditGrant.remaining))) == 10
    assert reconcile.run().ok


def test_a_task_that_cannot_be_refunded_does_not_block_the_others(app, make):
    """A soft-deleted customer's account cannot be locked: that task is an error, the rest proceed."""
    from models import JobRunError
    from services.ledger import customers as customer_service

    gone, kept = make.customer(credits=100), make.customer(credits=100)
    doomed = tasks.create(customer_id=gone.id, type="video", estimated_credits=10)
    others = [tasks.create(customer_id=kept.id, type="video", estimated_credits=10) for _ in range(3)]
    customer_service.soft_delete(external_id=gone.external_id)
    # The deleted customer's task is the oldest overdue one: it comes first.
    db.session.execute(text("UPDATE tasks SET deadline_at = :t WHERE id = :i"),
                       {"t": utcnow() - timedelta(hours=2), "i": doomed.id})
    db.session.execute(text("UPDATE tasks SET deadline_at = :t WHERE id <> :i"),
                       {"t": utcnow() - timedelta(minutes=5), "i": doomed.id})
    db.session.commit()

    run = recover_timeouts.run(period="t1", trigger="manual")
    assert (run.status, run.processed_count, run.error_count) == ("succeeded", 3, 1)
    err = db.session.scalar(select(JobRunError).where(JobRunError.run_id == run.id))
    assert err.customer_id == gone.id and str(doomed.id) in err.error
    assert {db.session.get(Task, t.id).status for t in others} == {"timed_out"}
    assert db.session.get(Task, doomed.id).status == "pending"
    assert ledger.balance(kept.id) == 100
    assert reconcile.run().ok
