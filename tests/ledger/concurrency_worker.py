"""Run in a separate process: many threads debiting one customer through the ledger service."""
from __future__ import annotations

import threading
import traceback


def debit_storm(url: str, customer_id: int, threads: int, per_thread: int, credits: int,
                pool_size: int = 5) -> dict:
    """Each thread makes `per_thread` debits; returns counts of outcomes (and any errors)."""
    from dashboard import create_app
    from models import db
    from services.core.errors import InsufficientCredits
    from services.ledger import posting as ledger
    from tests.conftest import TEST_CONFIG

    app = create_app({**TEST_CONFIG, "SQLALCHEMY_DATABASE_URI": url,
                      "SQLALCHEMY_ENGINE_OPTIONS": {"pool_size": pool_size, "max_overflow": 0,
                                                    "pool_timeout": 120}})
    out = {"ok": 0, "insufficient": 0, "errors": []}
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def work():
        with app.app_context():
            start.wait()
            for _ in range(per_thread):
                try:
                    ledger.debit(customer_id=customer_id, credits=credits, feature="chat")
                    key = "ok"
                except InsufficientCredits:
                    key = "insufficient"
                except Exception:  # reported to the test, which fails on any
                    with lock:
                        out["errors"].append(traceback.format_exc(limit=3))
                    continue
                with lock:
                    out[key] += 1
            db.session.remove()

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    with app.app_context():
        db.engine.dispose()
    return out
