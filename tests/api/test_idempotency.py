"""Idempotency-Key on money-moving POSTs: replay, reuse, in progress, release, expiry, races."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from sqlalchemy import func, select

from models import IdempotencyRecord, LedgerEntry, db, utcnow
from services.ledger import idempotency as store
from tests.api.helpers import counts
from tests.helpers import ApiClient, assert_error

DEBIT = {"feature": "chat", "credits": 7}


def debits_of(customer_id: int) -> int:
    db.session.rollback()
    return db.session.scalar(select(func.count()).select_from(LedgerEntry).where(
        LedgerEntry.customer_id == customer_id, LedgerEntry.type == "debit"))


def test_same_key_and_body_replays_the_reply_with_one_entry(api, make):
    c = make.customer(external_id="i1", credits=100)
    h = {"Idempotency-Key": "order-1"}
    s1, b1, r1 = api.post("/api/v1/customers/i1/debits", DEBIT, headers=h)
    s2, b2, r2 = api.post("/api/v1/customers/i1/debits", DEBIT, headers=h)
    assert (s1, s2) == (201, 201) and b1 == b2 and b1["data"]["balance"] == 93
    assert "Idempotent-Replayed" not in r1.headers and r2.headers["Idempotent-Replayed"] == "true"
    assert debits_of(c.id) == 1


def test_same_key_other_body_is_409_reused_and_writes_nothing(api, make):
    c = make.customer(external_id="i2", credits=100)
    h = {"Idempotency-Key": "order-2"}
    assert api.post("/api/v1/customers/i2/debits", DEBIT, headers=h)[0] == 201
    before = counts()
    status, body, _ = api.post("/api/v1/customers/i2/debits", {**DEBIT, "credits": 8}, headers=h)
    assert_error(status, body, "IDEMPOTENCY_KEY_REUSED", 409)
    assert counts() == before and debits_of(c.id) == 1


def test_same_key_on_another_customer_is_reused(api, make):
    make.customer(external_id="i3a", credits=100)
    make.customer(external_id="i3b", credits=100)
    h = {"Idempotency-Key": "order-3"}
    assert api.post("/api/v1/customers/i3a/debits", DEBIT, headers=h)[0] == 201
    status, body, _ = api.post("/api/v1/customers/i3b/debits", DEBIT, headers=h)
    assert_error(status, body, "IDEMPOTENCY_KEY_REUSED", 409)


def test_keys_are_scoped_per_api_key(app, make):
    """Two API keys sending the same Idempotency-Key make two requests: single debits, batch items
    and task charges each get their own ledger entry."""
    c = make.customer(external_id="i5", credits=100)
    one, two = ApiClient(app, make.api_key()[1]), ApiClient(app, make.api_key()[1])
    h = {"Idempotency-Key": "shared-key"}
    s1, b1, _ = one.post("/api/v1/customers/i5/debits", DEBIT, headers=h)
    s2, b2, r2 = two.post("/api/v1/customers/i5/debits", {**DEBIT, "credits": 8}, headers=h)
    assert (s1, s2) == (201, 201), (b1, b2)
    assert "Idempotent-Replayed" not in r2.headers and b2["data"]["balance"] == 100 - 7 - 8
    item = [{"customer": "i5", "feature": "chat", "credits": 1, "idempotency_key": "item-1"}]
    for client in (one, two):
        status, body, _ = client.post("/api/v1/debits/batch", {"debits": item})
        assert status == 200 and body["data"]["results"][0]["replayed"] is False, body
    task = {"customer": "i5", "type": "image", "mode": "async", "estimated_credits": 2}
    assert [cl.post("/api/v1/tasks", task, headers=h)[0] for cl in (one, two)] == [201, 201]
    assert debits_of(c.id) == 6
    again = one.post("/api/v1/customers/i5/debits", DEBIT, headers=h)[2]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert debits_of(c.id) == 6


def test_a_key_still_in_progress_is_409_in_use_and_retryable(api, make):
    make.customer(external_id="i4", credits=100)
    status, body, _ = api.post("/api/v1/customers/i4/debits", DEBIT, headers={"Idempotency-Key": "k4"})
    assert status == 201
    rec = db.session.scalar(select(IdempotencyRecord).where(IdempotencyRecord.key == "k4"))
    rec.status, rec.response_status, rec.response_body = "in_progress", None, None
    db.session.commit()
    status, body, _ = api.post("/api/v1/customers/i4/debits", DEBIT, headers={"Idempotency-Key": "k4"})
    assert_error(status, body, "IDEMPOTENCY_KEY_IN_USE", 409, retryable=True)


def test_an_abandoned_claim_is_taken_over_and_the_ledger_key_replays(api, make):
    c = make.customer(external_id="i5", credits=100)
    h = {"Idempotency-Key": "k5"}
    first = api.post("/api/v1/customers/i5/debits", DEBIT, headers=h)[1]
    rec = db.session.scalar(select(IdempotencyRecord).where(IdempotencyRecord.key == "k5"))
    rec.status, rec.response_body = "in_progress", None  # the process died before storing
    rec.created_at = utcnow() - store.LEASE - timedelta(seconds=1)
    db.session.commit()
    status, again, _ = api.post("/api/v1/customers/i5/debits", DEBIT, headers=h)
    assert status == 201 and again == first and debits_of(c.id) == 1


def test_validation_errors_and_404_release_the_key(api, make):
    make.customer(external_id="i6", credits=100)
    h = {"Idempotency-Key": "k6"}
    assert api.post("/api/v1/customers/i6/debits", {"feature": "chat", "credits": "7"}, headers=h)[0] == 422
    assert api.post("/api/v1/customers/nobody/debits", DEBIT, headers=h)[0] == 404
    assert db.session.scalar(select(func.count()).select_from(IdempotencyRecord)) == 0
    assert api.post("/api/v1/customers/i6/debits", DEBIT, headers=h)[0] == 201


def test_insufficient_credits_is_stored_and_replayed(api, make):
    make.customer(external_id="i7", credits=3)
    h = {"Idempotency-Key": "k7"}
    s1, b1, _ = api.post("/api/v1/customers/i7/debits", DEBIT, headers=h)
    s2, b2, r2 = api.post("/api/v1/customers/i7/debits", DEBIT, headers=h)
    assert_error(s1, b1, "INSUFFICIENT_CREDITS", 402)
    assert (s2, b2) == (s1, b1) and r2.headers["Idempotent-Replayed"] == "true"


def test_a_server_error_releases_the_key(db_url):
    from tests.conftest import build_app

    app = build_app(db_url)
    calls = []

    from dashboard.api.auth import api_key_required
    from dashboard.api.core import ok
    from dashboard.api.idempotency import idempotent

    @api_key_required()
    @idempotent
    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("provider timeout")
        return ok({"n": len(calls)}, 201)

    from dashboard.extensions import csrf

    app.add_url_rule("/api/v1/flaky", "flaky", csrf.exempt(flaky), methods=["POST"])
    with app.app_context():
        _fresh_schema(db_url)
        from tests.factories import Factory
        _, plain = Factory().api_key()
        client = ApiClient(app, plain)
        h = {"Idempotency-Key": "flaky-1"}
        assert client.post("/api/v1/flaky", {"a": 1}, headers=h)[0] == 500
        assert client.post("/api/v1/flaky", {"a": 1}, headers=h)[:2] == (201, {"success": True,
                                                                                 "data": {"n": 2}})
        assert client.post("/api/v1/flaky", {"a": 1}, headers=h)[2].headers["Idempotent-Replayed"]
        assert len(calls) == 2
        db.session.remove()


def _fresh_schema(db_url: str) -> None:
    if db_url.startswith("sqlite"):
        db.create_all()
    else:
        from tests.conftest import _truncate_pg
        _truncate_pg()


def test_malformed_key_header_is_422(api, make):
    make.customer(external_id="i8", credits=100)
    for bad in ["", "has space", "x" * 129, "ключ"]:
        status, body, _ = api.post("/api/v1/customers/i8/debits", DEBIT,
                                   headers={"Idempotency-Key": bad.encode().decode("latin-1")})
        assert_error(status, body, "VALIDATION_ERROR", 422)


def test_records_live_24_hours_and_cleanup_removes_expired(api, make):
    make.customer(external_id="i9", credits=100)
    api.post("/api/v1/customers/i9/debits", DEBIT, headers={"Idempotency-Key": "k9"})
    rec = db.session.scalar(select(IdempotencyRecord).where(IdempotencyRecord.key == "k9"))
    assert rec.expires_at - rec.created_at >= timedelta(hours=24)
    assert store.cleanup(now=utcnow()) == 0
    assert store.cleanup(now=rec.expires_at + timedelta(seconds=1)) == 1
    assert db.session.scalar(select(func.count()).select_from(IdempotencyRecord)) == 0


def test_without_the_header_nothing_is_replayed(api, make):
    c = make.customer(external_id="i10", credits=100)
    assert api.post("/api/v1/customers/i10/debits", DEBIT)[0] == 201
    assert api.post("/api/v1/customers/i10/debits", DEBIT)[0] == 201
    assert debits_of(c.id) == 2


def test_fifty_concurrent_requests_with_one_key_make_one_entry(pg_app):
    from tests.factories import Factory

    make = Factory()
    customer_id = make.customer(external_id="race", credits=1000).id
    _, plain = make.api_key()
    db.session.remove()
    barrier = threading.Barrier(50)

    def hit(_):
        client = ApiClient(pg_app, plain)
        barrier.wait()
        status, body, resp = client.post("/api/v1/customers/race/debits", DEBIT,
                                         headers={"Idempotency-Key": "race-1"})
        return status, body

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(hit, range(50)))
    ok = [b for s, b in results if s == 201]
    busy = [b for s, b in results if s == 409]
    print(f"50 concurrent: {len(ok)} x 201 (one applied, rest replays), {len(busy)} x 409 IN_USE")
    assert len(ok) + len(busy) == 50, {s for s, _ in results}
    assert ok and all(b == ok[0] for b in ok)
    assert all(b["code"] == "IDEMPOTENCY_KEY_IN_USE" and b["retryable"] for b in busy)
    assert debits_of(customer_id) == 1
    assert ok[0]["data"]["balance"] == 993
