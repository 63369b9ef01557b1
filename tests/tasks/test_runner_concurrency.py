"""Three loop workers (threads with their own app contexts) over 1,000 pending tasks on
PostgreSQL: each task reaches a provider once and is settled exactly once."""
from __future__ import annotations

import random
import threading
import time
from collections import Counter

import pytest
from sqlalchemy import func, select

from models import LedgerEntry, Task, db
from services.core.db import atomic
from services.ledger import posting as ledger
from services.ledger import reconcile
from services.tasks import prepaid as tasks
from services.tasks.runner import loops

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]


@pytest.mark.pg
@pytest.mark.slow  # ~25 s on an idle 2-core machine (setup ~10 s), minutes under heavy load
def test_three_workers_run_and_settle_each_of_1000_tasks_once(pg_app, factory, fakes):
    seed = random.randrange(1_000_000)
    print(f"seed={seed}")
    rng = random.Random(seed)
    fakes.configure(pg_app, AI_RUNNER_BATCH=10, AI_RUNNER_CONCURRENCY=1)  # 3 workers, 1 thread each
    factory.feature_price(feature="chat", credits_per_unit=1, unit="token")
    factory.feature_price(feature="video", credits_per_unit=3, unit="second")
    t0 = time.perf_counter()
    customers = [factory.customer(credits=100_000) for _ in range(20)]
    ids: set[int] = set()
    for start in range(0, 1000, 100):
        with atomic():  # the charges commit 100 at a time: the setup is not what is measured
            for k in range(start, start + 100):
                c = customers[k % len(customers)]
                if k % 10 == 9:  # one in ten is an async video job
                    t = tasks.create(customer_id=c.id, type="video", mode="async",
                                     estimated_credits=30,
                                     input={"prompt": f"clip {k}", "seconds": rng.randint(1, 8)})
                else:
                    text = " ".join(rng.choices(WORDS, k=rng.randint(1, 12)))
                    t = tasks.create(customer_id=c.id, type="chat", estimated_credits=40,
                                     priority=rng.randint(0, 3),
                                     input={"messages": [{"role": "user", "content": text}]})
                ids.add(t.id)
    # The primary fails now and then: the fallback serves those (still one answered call each).
    fakes.primary.fail_next(25, 503, path="/v1/chat/completions")
    print(f"setup {time.perf_counter() - t0:.1f} s")

    barrier = threading.Barrier(3)
    results: dict[int, list] = {k: [] for k in range(3)}
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        with pg_app.app_context():
            try:
                barrier.wait()
                for _ in range(5000):
                    main, query = loops.run_main(), loops.run_query()
                    results[k] += [main, query]
                    if main.claimed or query.claimed:
                        continue
                    left = db.session.scalar(select(func.count()).select_from(Task).where(
                        Task.status.in_(tasks.OPEN)))
                    db.session.rollback()
                    if not left:
                        return
                    time.sleep(0.02)  # another worker holds the last ones
                raise AssertionError("the loops did not drain the queue")
            except BaseException as err:  # reported below
                errors.append(err)
            finally:
                db.session.remove()

    t1 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"run {time.perf_counter() - t1:.1f} s")
    assert errors == []
    assert [e for rs in results.values() for r in rs for e in r.errors] == []

    claimed = {k: sum(r.claimed for r in rs[0::2]) for k, rs in results.items()}
    print(f"claimed per worker {claimed}")
    assert sum(claimed.values()) == 1000  # nobody claimed a task twice, nothing was retried
    assert sum(r.skipped for rs in results.values() for r in rs[0::2]) == 0

    # Each task reached a provider once (answered submits and sync calls, both endpoints).
    served = fakes.primary.calls_per_task() + fakes.fallback.calls_per_task()
    assert set(served) == ids and set(served.values()) == {1}
    assert len(fakes.fallback.answered("POST", "/v1/chat/completions")) == 25

    db.session.expire_all()
    statuses = Counter(db.session.scalars(select(Task.status)))
    assert statuses == {"succeeded": 1000}
    # Settled exactly once: one charge per task, and one refund when the actual was lower.
    per_task = Counter(db.session.execute(select(LedgerEntry.task_id, LedgerEntry.type)).all())
    for t in db.session.scalars(select(Task)):
        assert per_task[(t.id, "debit")] == 1
        assert per_task[(t.id, "refund")] == (1 if t.refunded_credits else 0)
        usage = t.output["usage"]
        expected = usage.get("total_tokens", 0) if t.type == "chat" else 3 * usage["seconds"]
        assert t.actual_credits == min(expected, t.charged_credits)
        assert t.refunded_credits == t.charged_credits - t.actual_credits
    spent = dict(db.session.execute(select(Task.customer_id, func.sum(Task.actual_credits))
                                    .group_by(Task.customer_id)).all())
    assert {c.id: ledger.balance(c.id) for c in customers} == \
        {c.id: 100_000 - spent[c.id] for c in customers}
    assert reconcile.run().ok
    print(f"total {time.perf_counter() - t0:.1f} s")
