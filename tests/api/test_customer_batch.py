"""POST /api/v1/customers/batch: up to 1,000 upserts in one call, one result per item."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import event, func, select

from models import Account, Customer, IdempotencyRecord, db
from services.ledger import customers
from tests.api.helpers import counts
from tests.helpers import ApiClient, assert_error

URL = "/api/v1/customers/batch"


def statuses(body: dict) -> list[str]:
    return [r["status"] for r in body["data"]["results"]]


def row(external_id: str) -> Customer:
    db.session.rollback()
    return db.session.scalar(select(Customer).where(Customer.external_id == external_id))


def test_created_updated_and_unchanged_in_one_call(api, make):
    pro = make.plan(code="pro")
    make.customer(external_id="old-1", email="old1@example.com", name="Old One")
    make.customer(external_id="old-2", email="old2@example.com", name="Same")
    gone = make.customer(external_id="gone", email="gone@example.com", name="Gone")
    customers.soft_delete(external_id="gone")
    before = row("old-2").updated_at
    status, body, _ = api.post(URL, {"customers": [
        {"external_id": "new-1", "email": "n1@example.com", "name": "New", "plan": "pro"},
        {"external_id": "old-1", "email": "changed@example.com", "plan": "pro"},
        {"external_id": "old-2", "email": "old2@example.com", "name": "Same"},
        {"external_id": "old-2x", "email": "x@example.com"},
        {"external_id": "gone", "email": "gone@example.com"},
    ]})
    assert status == 200, body
    data = body["data"]
    assert statuses(body) == ["created", "updated", "unchanged", "created", "updated"]
    assert [r["index"] for r in data["results"]] == [0, 1, 2, 3, 4]
    assert [r["external_id"] for r in data["results"]] == ["new-1", "old-1", "old-2", "old-2x", "gone"]
    assert (data["created"], data["updated"], data["unchanged"], data["failed"]) == (2, 2, 1, 0)
    new = row("new-1")
    assert (new.email, new.name, new.plan_id, new.subscription_status) == \
        ("n1@example.com", "New", pro.id, "none")
    assert db.session.scalar(select(Account.balance).where(Account.customer_id == new.id)) == 0
    old = row("old-1")
    assert (old.email, old.name, old.plan_id) == ("changed@example.com", "Old One", pro.id)
    assert row("old-2").updated_at == before  # unchanged: not written
    assert row("gone").deleted_at is None and row("gone").id == gone.id
    # what the batch created reads back like a customer PUT created
    assert api.get("/api/v1/customers/new-1")[1]["data"]["plan"] == "pro"


def test_the_low_balance_threshold_is_set_kept_or_removed_like_put(api, make):
    make.customer(external_id="t-keep", email="k@example.com")
    make.customer(external_id="t-drop", email="d@example.com")
    customers.upsert(external_id="t-keep", email="k@example.com", low_balance_threshold=40)
    customers.upsert(external_id="t-drop", email="d@example.com", low_balance_threshold=40)
    status, body, _ = api.post(URL, {"customers": [
        {"external_id": "t-new", "email": "n@example.com", "low_balance_threshold": 25},
        {"external_id": "t-keep", "email": "k@example.com"},  # absent: kept
        {"external_id": "t-drop", "email": "d@example.com", "low_balance_threshold": None},
        {"external_id": "t-bad", "email": "b@example.com", "low_balance_threshold": -1},
    ]})
    assert status == 200, body
    assert statuses(body) == ["created", "unchanged", "updated", "error"]
    assert body["data"]["results"][3]["code"] == "VALIDATION_ERROR"
    assert [row(e).low_balance_threshold for e in ("t-new", "t-keep", "t-drop")] == [25, 40, None]
    assert row("t-bad") is None
    profile = api.get("/api/v1/customers/t-new")[1]["data"]
    assert (profile["low_balance_threshold"], profile["low_balance_threshold_override"]) == (25, 25)


def test_each_item_gets_the_error_the_single_upsert_gives(api, make):
    make.plan(code="pro")
    bad = [{"email": "not-an-email"}, {"email": "a@b.c", "plan": "nope"}, {"name": "no email"},
           {"email": "a@b.c", "name": 5}, {"email": "a@b.c", "colour": "blue"},
           {"email": "a@b.c", "name": "x" * 201}]
    items = [{"external_id": f"bad-{i}", **b} for i, b in enumerate(bad)]
    items.insert(3, {"external_id": "fine", "email": "fine@example.com"})
    before = counts()
    status, body, _ = api.post(URL, {"customers": items})
    assert status == 200, body
    results = body["data"]["results"]
    assert statuses(body) == ["error"] * 3 + ["created"] + ["error"] * 3
    assert body["data"]["failed"] == 6 and body["data"]["created"] == 1
    for r in results:
        if r["status"] != "error":
            continue
        item = dict(items[r["index"]])
        single_status, single, _ = api.put(f"/api/v1/customers/{item.pop('external_id')}", item)
        assert_error(single_status, single, r["code"], 422)
        assert (r["code"], r["error"], r["details"], r["retryable"]) == \
            (single["code"], single["error"], single["details"], single["retryable"])
    assert counts()["Customer"] == before["Customer"] + 1


def test_external_id_is_checked_like_the_path_of_put(api):
    items = [{"external_id": "   ", "email": "a@b.c"}, {"external_id": "a/b", "email": "a@b.c"},
             {"external_id": "x" * 129, "email": "a@b.c"}, {"external_id": 7, "email": "a@b.c"},
             {"email": "a@b.c"}, {"external_id": "  padded ", "email": "p@b.c"}]
    status, body, _ = api.post(URL, {"customers": items})
    assert status == 200, body
    results = body["data"]["results"]
    assert statuses(body) == ["error"] * 5 + ["created"]
    assert all(r["code"] == "VALIDATION_ERROR" and "external_id" in r["details"] for r in results[:5])
    assert [r["external_id"] for r in results] == ["", "a/b", "x" * 129, None, None, "padded"]
    assert row("padded").email == "p@b.c"  # trimmed, like PUT's service does


def test_a_customer_sent_twice_is_refused_in_both_items(api, make):
    make.customer(external_id="twice-old", email="old@example.com")
    status, body, _ = api.post(URL, {"customers": [
        {"external_id": "twice", "email": "a@example.com"},
        {"external_id": "once", "email": "o@example.com"},
        {"external_id": " twice", "email": "b@example.com"},
        {"external_id": "twice-old", "email": "new@example.com"},
        {"external_id": "twice-old", "email": "new@example.com"},
    ]})
    assert status == 200, body
    results = body["data"]["results"]
    assert statuses(body) == ["error", "created", "error", "error", "error"]
    assert results[0]["details"] == {"external_id": "duplicate in this batch"}
    assert "items 0, 2" in results[0]["error"] and "items 3, 4" in results[3]["error"]
    assert row("twice") is None and row("twice-old").email == "old@example.com"


def test_one_to_a_thousand_items(api):
    before = counts()
    for bad in [{"customers": []}, {"customers": [{"external_id": f"c{i}", "email": "a@b.c"}
                                                  for i in range(1001)]},
                {}, {"customers": ["x"]}, {"customers": {}}, {"customers": [], "extra": 1}]:
        status, body, _ = api.post(URL, bad)
        assert_error(status, body, "VALIDATION_ERROR", 422)
    status, body, _ = api.post(URL, {"customers": [{"external_id": f"c{i}", "email": "a@b.c"}
                                                   for i in range(1001)]})
    assert "customers" in body["details"]
    assert counts() == before
    items = [{"external_id": f"c{i:04d}", "email": f"c{i}@example.com"} for i in range(1000)]
    started = time.perf_counter()
    with counting() as seen:
        status, body, _ = api.post(URL, {"customers": items})
    print(f"1,000 new customers in {time.perf_counter() - started:.2f}s")
    assert status == 200 and body["data"]["created"] == 1000
    created_with = len(seen)
    for it in items[::2]:
        it["name"] = "renamed"
    with counting() as seen:
        status, body, _ = api.post(URL, {"customers": items})
    assert (body["data"]["updated"], body["data"]["unchanged"]) == (500, 500)
    print(f"statements: {created_with} to create 1,000, {len(seen)} to update 500 of them")
    assert created_with < 20 and len(seen) < 20  # set-based, not per customer
    assert counts()["Customer"] == before["Customer"] + 1000
    assert db.session.scalar(select(func.count()).select_from(Account)) == 1000


def test_idempotency_key_replays_and_refuses_another_body(api, make):
    body = {"customers": [{"external_id": "i-1", "email": "i1@example.com"}]}
    h = {"Idempotency-Key": "sync-1"}
    first = api.post(URL, body, headers=h)
    assert first[0] == 200 and statuses(first[1]) == ["created"]
    again = api.post(URL, body, headers=h)
    assert again[:2] == first[:2] and again[2].headers["Idempotent-Replayed"] == "true"
    other = {"customers": [{"external_id": "i-1", "email": "other@example.com"}]}
    assert_error(*api.post(URL, other, headers=h)[:2], "IDEMPOTENCY_KEY_REUSED", 409)
    assert row("i-1").email == "i1@example.com"
    # the key is scoped to the API key: another key's call runs (and finds nothing to change)
    _, plain = make.api_key(scopes=["customers:write"])
    status, out, resp = ApiClient(api.client.application, plain).post(URL, body, headers=h)
    assert status == 200 and statuses(out) == ["unchanged"] and "Idempotent-Replayed" not in resp.headers
    db.session.rollback()
    assert db.session.scalar(select(func.count()).select_from(IdempotencyRecord)) == 2


def test_scope_and_authentication(app, api_as, make):
    body = {"customers": [{"external_id": "s-1", "email": "s@example.com"}]}
    assert_error(*ApiClient(app, None).post(URL, body)[:2], "AUTH_UNAUTHORIZED", 401)
    assert_error(*ApiClient(app, "cdk_nope").post(URL, body)[:2], "AUTH_UNAUTHORIZED", 401)
    for scopes in [("customers:read",), ("debits:write", "grants:write")]:
        assert_error(*api_as(*scopes).post(URL, body)[:2], "AUTH_FORBIDDEN", 403)
    assert row("s-1") is None
    status, out, _ = api_as("customers:write").post(URL, body)
    assert status == 200 and statuses(out) == ["created"]


def test_batch_is_still_a_usable_external_id(api):
    assert api.put("/api/v1/customers/batch", {"email": "b@example.com"})[0] == 201
    assert api.get("/api/v1/customers/batch")[1]["data"]["email"] == "b@example.com"
    status, body, _ = api.post(URL, {"customers": [{"external_id": "batch", "email": "c@example.com"}]})
    assert statuses(body) == ["updated"] and row("batch").email == "c@example.com"


@pytest.mark.pg
def test_concurrent_batches_with_overlapping_new_customers(pg_app):
    from tests.factories import Factory

    _, plain = Factory().api_key(scopes=["customers:write"])
    db.session.remove()
    shared = [f"both-{i:03d}" for i in range(150)]
    # half the calls send the shared ids in the opposite order
    batches = [[*(shared[::-1] if n % 2 else shared), *(f"only{n}-{i}" for i in range(50))]
               for n in range(4)]
    barrier = threading.Barrier(len(batches))

    def send(n: int):
        client = ApiClient(pg_app, plain)
        barrier.wait()
        return client.post(URL, {"customers": [{"external_id": e, "email": f"{e}@example.com",
                                                "name": f"thread {n}"} for e in batches[n]]})[:2]

    with ThreadPoolExecutor(len(batches)) as pool:
        answers = list(pool.map(send, range(len(batches))))
    assert [s for s, _ in answers] == [200] * len(batches), answers
    made: dict[str, list[str]] = {}
    for (_, body), ids in zip(answers, batches, strict=True):
        for r, ext in zip(body["data"]["results"], ids, strict=True):
            assert r["external_id"] == ext
            made.setdefault(ext, []).append(r["status"])
    # every customer was created by exactly one call; the others updated or left it
    assert all(v.count("created") == 1 and set(v) <= {"created", "updated", "unchanged"}
               for v in made.values())
    db.session.rollback()
    n = db.session.scalar(select(func.count()).select_from(Customer))
    assert n == len(made) == 150 + 4 * 50
    assert db.session.scalar(select(func.count(func.distinct(Account.customer_id)))) == n
    assert db.session.scalar(select(func.count()).select_from(Account)) == n


@pytest.mark.pg
def test_concurrent_puts_of_one_new_customer(pg_app):
    from tests.factories import Factory

    _, plain = Factory().api_key(scopes=["customers:write"])
    db.session.remove()
    barrier = threading.Barrier(8)

    def put(n: int):
        client = ApiClient(pg_app, plain)
        barrier.wait()
        return client.put("/api/v1/customers/racer", {"email": f"r{n}@example.com"})[0]

    with ThreadPoolExecutor(8) as pool:
        got = sorted(pool.map(put, range(8)))
    assert got == [200] * 7 + [201]
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 1


class counting:  # noqa: N801 - a context manager read as a phrase
    """The SQL statements run inside the block."""

    def __enter__(self) -> list[str]:
        self.seen: list[str] = []
        event.listen(db.engine, "before_cursor_execute", self._on)
        return self.seen

    def _on(self, _conn, _cursor, statement, *_args):
        self.seen.append(statement)

    def __exit__(self, *exc):
        event.remove(db.engine, "before_cursor_execute", self._on)
