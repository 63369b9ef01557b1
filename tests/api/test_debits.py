"""POST /api/v1/customers/{id}/debits and POST /api/v1/debits/batch."""
from __future__ import annotations

import random
import time

from sqlalchemy import func, select

from models import Account, LedgerEntry, db
from services.ledger import reconcile
from tests.api.helpers import counts
from tests.helpers import assert_error


def balance(customer_id: int) -> int:
    db.session.rollback()
    return db.session.scalar(select(Account.balance).where(Account.customer_id == customer_id))


def test_debit_priced_from_the_feature_table(api, make):
    c = make.customer(external_id="d1", credits=100)
    make.feature_price(feature="image", credits_per_unit=4)
    status, body, _ = api.post("/api/v1/customers/d1/debits",
                               {"feature": "image", "quantity": 3, "reference": "job-9",
                                "metadata": {"model": "x"}})
    assert status == 201 and body == {"success": True,
                                      "data": {"entry_id": body["data"]["entry_id"], "credits": 12,
                                               "balance": 88}}
    e = db.session.get(LedgerEntry, body["data"]["entry_id"])
    assert (e.feature, e.quantity, e.reference, e.meta, e.amount) == \
        ("image", 3, "job-9", {"model": "x"}, -12)
    assert balance(c.id) == 88


def test_quantity_defaults_to_one(api, make):
    make.customer(external_id="d2", credits=100)
    make.feature_price(feature="chat", credits_per_unit=2)
    assert api.post("/api/v1/customers/d2/debits", {"feature": "chat"})[1]["data"]["credits"] == 2


def test_unpriced_feature_without_credits_is_422(api, make):
    make.customer(external_id="d3", credits=100)
    before = counts()
    status, body, _ = api.post("/api/v1/customers/d3/debits", {"feature": "lipsync", "quantity": 2})
    assert_error(status, body, "VALIDATION_ERROR", 422)
    assert body["details"] == {"feature": "no price for this feature"} and counts() == before


def test_explicit_credits_need_grants_write_as_well(api_as, make):
    make.customer(external_id="d4", credits=100)
    status, body, _ = api_as("debits:write").post("/api/v1/customers/d4/debits",
                                                  {"feature": "video", "credits": 30})
    assert_error(status, body, "AUTH_FORBIDDEN", 403)
    both = api_as("debits:write", "grants:write")
    status, body, _ = both.post("/api/v1/customers/d4/debits", {"feature": "video", "credits": 30})
    assert status == 201 and body["data"]["balance"] == 70


def test_explicit_credits_skip_the_price_table(api, make):
    make.customer(external_id="d5", credits=100)
    make.feature_price(feature="chat", credits_per_unit=5)
    status, body, _ = api.post("/api/v1/customers/d5/debits",
                               {"feature": "chat", "quantity": 2, "credits": 3})
    assert status == 201 and body["data"]["credits"] == 3


def test_insufficient_credits_is_402_and_writes_nothing(api, make):
    c = make.customer(external_id="d6", credits=5)
    before = counts()
    status, body, _ = api.post("/api/v1/customers/d6/debits", {"feature": "chat", "credits": 6})
    assert_error(status, body, "INSUFFICIENT_CREDITS", 402)
    assert body["details"] == {"balance": 5, "required": 6}
    assert counts() == before and balance(c.id) == 5


def test_unknown_or_deleted_customer_is_404(api, make):
    from services.ledger import customers

    make.customer(external_id="gone", credits=5)
    customers.soft_delete(external_id="gone")
    for ext in ("never", "gone"):
        status, body, _ = api.post(f"/api/v1/customers/{ext}/debits", {"feature": "chat", "credits": 1})
        assert_error(status, body, "CUSTOMER_NOT_FOUND", 404)


# --- batch ----------------------------------------------------------------------------------------

def test_batch_results_come_in_order_with_per_item_errors(api, make):
    a = make.customer(external_id="ba", credits=10)
    b = make.customer(external_id="bb", credits=3)
    make.feature_price(feature="chat", credits_per_unit=2)
    items = [
        {"customer": "ba", "feature": "chat", "quantity": 2, "idempotency_key": "b-1"},
        {"customer": "bb", "feature": "chat", "quantity": 2, "idempotency_key": "b-2"},  # 4 > 3
        {"customer": "zz", "feature": "chat", "idempotency_key": "b-3"},
        {"customer": "ba", "feature": "unpriced", "idempotency_key": "b-4"},
        {"customer": "bb", "feature": "x", "credits": 3, "idempotency_key": "b-5"},
        {"customer": "ba", "feature": "chat", "quantity": 2, "idempotency_key": "b-1"},  # replay
        {"customer": "ba", "feature": "chat", "quantity": 1, "idempotency_key": "b-1"},  # reuse
    ]
    status, body, _ = api.post("/api/v1/debits/batch", {"debits": items})
    assert status == 200, body
    res = body["data"]["results"]
    assert [r["index"] for r in res] == list(range(7))
    assert [r["success"] for r in res] == [True, False, False, False, True, True, False]
    assert [r.get("code") for r in res] == [None, "INSUFFICIENT_CREDITS", "CUSTOMER_NOT_FOUND",
                                           "VALIDATION_ERROR", None, None, "IDEMPOTENCY_KEY_REUSED"]
    assert res[0]["balance"] == 6 and res[4]["balance"] == 0
    assert res[5]["entry_id"] == res[0]["entry_id"] and res[5]["replayed"] is True
    assert (body["data"]["succeeded"], body["data"]["failed"]) == (3, 4)
    assert (balance(a.id), balance(b.id)) == (6, 0)


def test_batch_and_single_debit_share_the_ledger_key(api, make):
    make.customer(external_id="shared", credits=50)
    one = api.post("/api/v1/customers/shared/debits", {"feature": "chat", "credits": 5},
                   headers={"Idempotency-Key": "op-1"})[1]["data"]
    res = api.post("/api/v1/debits/batch", {"debits": [
        {"customer": "shared", "feature": "chat", "credits": 5, "idempotency_key": "op-1"}]})[1]
    item = res["data"]["results"][0]
    assert item["replayed"] and item["entry_id"] == one["entry_id"] and item["balance"] == 45


def test_batch_over_1000_items_or_malformed_item_is_422_and_writes_nothing(api, make):
    make.customer(external_id="bx", credits=10)
    item = {"customer": "bx", "feature": "chat", "credits": 1}
    before = counts()
    too_many = [{**item, "idempotency_key": f"k{i}"} for i in range(1001)]
    assert_error(*api.post("/api/v1/debits/batch", {"debits": too_many})[:2], "VALIDATION_ERROR", 422)
    status, body, _ = api.post("/api/v1/debits/batch", {"debits": [
        {**item, "idempotency_key": "ok"}, {**item, "credits": -1, "idempotency_key": "bad"}]})
    assert_error(status, body, "VALIDATION_ERROR", 422)
    assert "debits.1.credits" in body["details"]
    assert_error(*api.post("/api/v1/debits/batch", {"debits": []})[:2], "VALIDATION_ERROR", 422)
    assert counts() == before


def test_batch_explicit_credits_need_grants_write(api_as, make):
    make.customer(external_id="bs", credits=10)
    status, body, _ = api_as("debits:write").post("/api/v1/debits/batch", {"debits": [
        {"customer": "bs", "feature": "chat", "credits": 1, "idempotency_key": "x"}]})
    assert_error(status, body, "AUTH_FORBIDDEN", 403)


def test_batch_of_1000_with_mixed_failures_matches_a_model(api, make):
    seed = random.randrange(2**32)
    print(f"seed={seed}")
    rnd = random.Random(seed)
    make.feature_price(feature="chat", credits_per_unit=3)
    wallets = {f"m{i}": rnd.randint(0, 400) for i in range(20)}
    ids = {ext: make.customer(external_id=ext, credits=credits).id for ext, credits in wallets.items()}
    items, expected, model, seen = [], [], dict(wallets), {}
    for i in range(1000):
        roll = rnd.random()
        ext = rnd.choice(list(wallets))
        if roll < 0.05:
            item = {"customer": f"ghost{i}", "feature": "chat", "idempotency_key": f"g{i}"}
        elif roll < 0.10:
            item = {"customer": ext, "feature": "unpriced", "idempotency_key": f"u{i}"}
        elif roll < 0.15 and seen:
            old = rnd.choice(list(seen))
            item = dict(seen[old])
            if rnd.random() < 0.5:
                item["reference"] = "changed"  # same key, other debit
        elif roll < 0.55:
            item = {"customer": ext, "feature": "chat", "quantity": rnd.randint(1, 20),
                    "idempotency_key": f"q{i}"}
        else:
            item = {"customer": ext, "feature": "free-form", "credits": rnd.randint(1, 60),
                    "idempotency_key": f"c{i}", "reference": f"ref-{i}"}
        items.append(item)
        key = item["idempotency_key"]
        if item["customer"] not in wallets:
            expected.append("CUSTOMER_NOT_FOUND")
            continue
        if key in seen:
            expected.append("REPLAY" if seen[key] == item else "IDEMPOTENCY_KEY_REUSED")
            continue
        if item["feature"] == "unpriced":
            expected.append("VALIDATION_ERROR")
            continue
        cost = item.get("credits") or 3 * item["quantity"]
        if model[item["customer"]] < cost:
            expected.append("INSUFFICIENT_CREDITS")
            continue
        model[item["customer"]] -= cost
        seen[key] = item
        expected.append("OK")
    before = db.session.scalar(select(func.count()).select_from(LedgerEntry))
    started = time.perf_counter()
    status, body, _ = api.post("/api/v1/debits/batch", {"debits": items})
    print(f"batch of 1000: {time.perf_counter() - started:.2f}s")
    assert status == 200, body
    results = body["data"]["results"]
    got = ["REPLAY" if r["success"] and r["replayed"] else "OK" if r["success"] else r["code"]
           for r in results]
    assert got == expected
    made = expected.count("OK")
    assert db.session.scalar(select(func.count()).select_from(LedgerEntry)) == before + made
    assert {ext: balance(cid) for ext, cid in ids.items()} == model
    report = reconcile.run()
    assert report.ok, [c for c in report.checks if not c.ok]
    # the whole batch again: every applied item replays, nothing new is written
    again = api.post("/api/v1/debits/batch", {"debits": items})[1]["data"]["results"]
    assert [r["entry_id"] for r in again if r["success"]] == \
        [r["entry_id"] for r in results if r["success"]]
    assert all(r["replayed"] for r in again if r["success"])
    assert db.session.scalar(select(func.count()).select_from(LedgerEntry)) == before + made
