"""A request holds one pooled connection at a time.

A request that takes a second connection while holding a first can deadlock the worker: when
every connection of the pool is held by a request waiting for its second, all of them wait out
the pool timeout and answer 503. Found in the suite: the SQL debit read the settings (a cold
cache) into the session's transaction after ending it, then took its own connection; fifty
threads on a pool of fifteen all waited 30 s. A pool of one makes any such request fail at once.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from models import db
from services.core import settings as app_settings
from services.staff import accounts as staff_keys
from tests.conftest import _truncate_pg, build_app
from tests.factories import Factory
from tests.helpers import ApiClient
from tests.live import bearer


def _in_a_fresh_thread(fn):
    """Run `fn` where no session of the test holds a connection (as in a server's thread)."""
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(value=fn()))
    t.start()
    t.join(60)
    return out["value"]


@pytest.mark.pg
def test_every_api_call_is_served_by_a_pool_of_one(pg_url):
    app = build_app(pg_url, SQLALCHEMY_ENGINE_OPTIONS={"pool_size": 1, "max_overflow": 0,
                                                       "pool_timeout": 2})
    with app.app_context():
        _truncate_pg()
        make = Factory()
        make.customer(external_id="p1", credits=100)
        make.feature_price(feature="chat", credits_per_unit=2)
        _, plain = make.api_key()
        db.session.commit()
        db.session.remove()
        app_settings.clear_cache()  # cold caches: the first calls read settings and the key
        staff_keys.forget_api_key()
        api = ApiClient(app, plain)
        debit = {"feature": "chat", "credits": 7}

        def calls():
            key = {"Idempotency-Key": "pool-1"}
            return [
                ("sql debit", api.post("/api/v1/customers/p1/debits", debit, headers=key)[0], 201),
                ("replay", api.post("/api/v1/customers/p1/debits", debit, headers=key)[0], 201),
                ("short balance", api.post("/api/v1/customers/p1/debits",
                                           {"feature": "chat", "credits": 10_000})[0], 402),
                ("priced debit", api.post("/api/v1/customers/p1/debits", {"feature": "chat"},
                                          headers={"Idempotency-Key": "pool-2"})[0], 201),
                ("grant", api.post("/api/v1/customers/p1/grants",
                                   {"credits": 50, "source": "promo", "reason": "pool"},
                                   headers={"Idempotency-Key": "pool-3"})[0], 201),
                ("batch", api.post("/api/v1/debits/batch", {"debits": [
                    {"customer": "p1", "feature": "chat", "idempotency_key": "b-1"},
                    {"customer": "nobody", "feature": "chat", "idempotency_key": "b-2"}]})[0], 200),
                ("task", api.post("/api/v1/tasks", {"customer": "p1", "type": "x",
                                                    "estimated_credits": 4})[0], 201),
                ("upsert", api.put("/api/v1/customers/p2", {"email": "p2@example.com"})[0], 201),
                ("customer", api.get("/api/v1/customers/p1")[0], 200),
                ("ledger", api.get("/api/v1/customers/p1/ledger")[0], 200),
            ]

        results = _in_a_fresh_thread(calls)
    assert [(name, got) for name, got, _ in results] == [(name, want) for name, _, want in results]


def test_gunicorn_workers_on_a_pool_of_one_answer_every_concurrent_debit(live, make, db_url):
    """The same through gunicorn as it runs: 2 workers x 3 threads, each worker's pool one
    connection (DB_POOL_SIZE=1, no overflow), cold caches, 30 debits at once with distinct keys:
    none may wait out the pool timeout into a 503."""
    _, key = make.api_key()
    make.customer(external_id="pool_live", credits=1_000)
    make.feature_price(feature="chat", credits_per_unit=2)
    server = live(workers=2, DB_POOL_SIZE="1", DB_MAX_OVERFLOW="0")

    def debit(i: int) -> int:
        return server.post("/api/v1/customers/pool_live/debits", json={"feature": "chat"},
                           headers=bearer(key, **{"Idempotency-Key": f"pool-live-{i}"})).status_code

    with ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(debit, range(30)))
    assert statuses == [201] * 30, (statuses, server.log()[-3000:])
    got = server.get("/api/v1/customers/pool_live", headers=bearer(key)).json()
    assert got["data"]["balance"] == 1_000 - 30 * 2
