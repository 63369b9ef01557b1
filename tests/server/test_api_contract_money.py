"""The money contract over real HTTP against gunicorn (2 workers, SQLite and PostgreSQL), one
server boot for all of it: debits with Idempotency-Key replays (also 8 at once, across workers),
batch debits, prepaid tasks (create, complete with usage above the estimate, fail), purchases
(Stripe Checkout, Razorpay order + verify) through the SDKs against the fakes, webhooks signed
with the providers' real algorithms, and the cron trigger. Each answer is compared with the rows
the server wrote; every payment is credited exactly once whatever the deliveries.
"""
from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor

import requests
from sqlalchemy import func, select

from models import Customer, LedgerEntry, Payment, db
from services.ledger import posting as ledger
from tests.conftest import LIVE_SECRETS
from tests.fakes import signing
from tests.live import LiveServer, bearer
from tests.server.conftest import task_entries, task_row


def balance(external_id: str) -> int:
    db.session.rollback()
    return ledger.balance(db.session.scalar(select(Customer.id)
                                            .where(Customer.external_id == external_id)))


def entries(**where) -> int:
    db.session.rollback()
    q = select(func.count()).select_from(LedgerEntry)
    for k, v in where.items():
        q = q.where(getattr(LedgerEntry, k) == v)
    return db.session.scalar(q)


def purchase_grants(payment_id: int) -> int:
    return entries(payment_id=payment_id, type="grant")


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def deliver(server: LiveServer, path: str, request: tuple[bytes, dict]) -> requests.Response:
    body, headers = request
    return server.post(path, data=body, headers=headers)


def test_money_routes_over_gunicorn(live, make):
    _, key = make.api_key()
    make.feature_price(feature="chat", credits_per_unit=2)
    make.customer(external_id="led_a", credits=100)
    make.customer(external_id="led_b", credits=3)
    make.customer(external_id="pay_s", email="s@example.com")
    make.customer(external_id="pay_r", email="r@example.com")
    usd = make.package(credits=500, price_minor=1999, currency="USD")
    inr = make.package(credits=300, price_minor=49900, currency="INR")
    server = live(workers=2)
    auth = bearer(key)
    debits_and_batches(server, auth)
    prepaid_tasks(server, auth)
    stripe_checkout_and_webhooks(server, auth, usd.id)
    razorpay_order_verify_and_webhooks(server, auth, inr.id)
    cron(server)  # last: it grants the free tier's monthly credits to every customer
    assert "Traceback" not in server.log(), server.log()[-3000:]


def debits_and_batches(server: LiveServer, auth: dict) -> None:
    # Single debit, then its replay: the same answer, one ledger entry.
    first = server.post("/api/v1/customers/led_a/debits", json={"feature": "chat", "quantity": 2},
                        headers={**auth, "Idempotency-Key": "d-1"})
    assert first.status_code == 201, first.text
    assert (first.json()["data"]["credits"], first.json()["data"]["balance"]) == (4, 96)
    again = server.post("/api/v1/customers/led_a/debits", json={"feature": "chat", "quantity": 2},
                        headers={**auth, "Idempotency-Key": "d-1"})
    assert again.status_code == 201 and again.json() == first.json()
    assert again.headers.get("Idempotent-Replayed") == "true"
    reused = server.post("/api/v1/customers/led_a/debits", json={"feature": "chat", "credits": 1},
                         headers={**auth, "Idempotency-Key": "d-1"})
    assert (reused.status_code, reused.json()["code"]) == (409, "IDEMPOTENCY_KEY_REUSED")
    assert entries(type="debit") == 1 and balance("led_a") == 96

    # One key sent 8 times at once from 8 connections (both workers): one debit.
    def send(_):
        with requests.Session() as s:
            r = s.post(server.url + "/api/v1/customers/led_a/debits", timeout=30,
                       json={"feature": "x", "credits": 5}, headers={**auth, "Idempotency-Key": "d-2"})
            return r.status_code, r.json()
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(send, range(8)))
    ok = [body for status, body in answers if status == 201]
    busy = [body for status, body in answers if status == 409]
    assert len(ok) + len(busy) == 8 and ok, answers
    assert {b["data"]["entry_id"] for b in ok} == {ok[0]["data"]["entry_id"]}
    assert all(b["code"] == "IDEMPOTENCY_KEY_IN_USE" and b["retryable"] for b in busy), busy
    assert balance("led_a") == 91

    # A debit the balance cannot cover: 402, nothing written.
    poor = server.post("/api/v1/customers/led_b/debits", json={"feature": "x", "credits": 4},
                       headers=auth)
    assert (poor.status_code, poor.json()["code"], poor.json()["success"]) == \
        (402, "INSUFFICIENT_CREDITS", False)

    # Batch: one result per item, in order; an item replayed by key is not charged twice.
    items = [{"customer": "led_a", "feature": "chat", "quantity": 1, "idempotency_key": "b-1"},
             {"customer": "led_b", "feature": "x", "credits": 4, "idempotency_key": "b-2"},
             {"customer": "nobody", "feature": "x", "credits": 1, "idempotency_key": "b-3"},
             {"customer": "led_b", "feature": "x", "credits": 3, "idempotency_key": "b-4"}]
    batch = server.post("/api/v1/debits/batch", json={"debits": items}, headers=auth)
    assert batch.status_code == 200, batch.text
    res = batch.json()["data"]["results"]
    assert [(r["index"], r["success"], r.get("code")) for r in res] == [
        (0, True, None), (1, False, "INSUFFICIENT_CREDITS"), (2, False, "CUSTOMER_NOT_FOUND"),
        (3, True, None)]
    replay = server.post("/api/v1/debits/batch", json={"debits": items[:1]}, headers=auth)
    assert replay.json()["data"]["results"][0]["replayed"] is True
    assert (balance("led_a"), balance("led_b")) == (89, 0)


def prepaid_tasks(server: LiveServer, auth: dict) -> None:
    # Prepaid tasks: the estimate is charged; complete refunds the rest and keeps the usage;
    # a usage above the estimate is capped; fail refunds in full; a second settle is 409.
    def task(estimate: int) -> int:
        r = server.post("/api/v1/tasks", headers=auth, json={
            "customer": "led_a", "type": "video", "estimated_credits": estimate})
        assert r.status_code == 201 and r.json()["data"]["charged_credits"] == estimate, r.text
        return r.json()["data"]["task_id"]
    small, big, failing = task(10), task(10), task(20)
    assert balance("led_a") == 89 - 40
    done = server.post(f"/api/v1/tasks/{small}/complete", headers=auth, json={"actual_credits": 4})
    assert done.status_code == 200, done.text
    d = done.json()["data"]
    assert (d["status"], d["actual_credits"], d["usage_credits"], d["refunded_credits"]) == \
        ("succeeded", 4, 4, 6)
    over = server.post(f"/api/v1/tasks/{big}/complete", headers=auth,
                       json={"actual_credits": 25}).json()["data"]
    assert (over["actual_credits"], over["usage_credits"], over["refunded_credits"]) == (10, 25, 0)
    read = server.get(f"/api/v1/tasks/{big}", headers=auth).json()["data"]
    assert (read["actual_credits"], read["usage_credits"]) == (10, 25)
    failed = server.post(f"/api/v1/tasks/{failing}/fail", headers=auth, json={"error": "gpu lost"})
    assert (failed.json()["data"]["status"], failed.json()["data"]["refunded_credits"]) == \
        ("failed", 20)
    late = server.post(f"/api/v1/tasks/{small}/complete", headers=auth, json={"actual_credits": 1})
    assert (late.status_code, late.json()["code"]) == (409, "TASK_ALREADY_FINISHED")
    assert task_entries(small) == [("debit", -10), ("refund", 6)]
    assert task_entries(big) == [("debit", -10)]
    assert task_entries(failing) == [("debit", -20), ("refund", 20)]
    assert task_row(big).usage_credits == 25
    assert balance("led_a") == 89 - 4 - 10
    missing = server.get("/api/v1/tasks/999999", headers=auth)
    assert (missing.status_code, missing.json()["code"]) == (404, "TASK_NOT_FOUND")


def stripe_checkout_and_webhooks(server: LiveServer, auth: dict, package_id: int) -> None:
    stripe = server.stripe
    # Stripe: Checkout opened with our payment id; credits only when the signed event arrives.
    got = server.post("/api/v1/customers/pay_s/purchases", headers=auth,
                      json={"package_id": package_id, "provider": "stripe"})
    assert got.status_code == 201, got.text
    buy = got.json()["data"]
    assert buy["checkout_url"].startswith(stripe.url) and buy["session_id"] in stripe.sessions
    assert balance("pay_s") == 0
    stripe.complete_session(buy["session_id"])
    event = signing.checkout_session_completed(stripe.sessions[buy["session_id"]])
    forged = deliver(server, "/api/webhooks/stripe",
                     signing.stripe_webhook_request(event, "whsec_wrong"))
    assert (forged.status_code, forged.json()["code"]) == (400, "INVALID_SIGNATURE")
    assert balance("pay_s") == 0
    signed = signing.stripe_webhook_request(event, stripe.webhook_secret)
    first, second = [deliver(server, "/api/webhooks/stripe", signed) for _ in range(2)]
    assert (first.status_code, second.status_code) == (200, 200), (first.text, second.text)
    assert (first.json()["data"]["duplicate"], second.json()["data"]["duplicate"]) == (False, True)
    assert balance("pay_s") == 500 and purchase_grants(buy["payment_id"]) == 1
    db.session.rollback()
    assert db.session.get(Payment, buy["payment_id"]).status == "paid"


def razorpay_order_verify_and_webhooks(server: LiveServer, auth: dict, package_id: int) -> None:
    razorpay = server.razorpay
    # Razorpay: order, Checkout's signature verified, then the webhook: credited once.
    got = server.post("/api/v1/customers/pay_r/purchases", headers=auth,
                      json={"package_id": package_id, "provider": "razorpay"})
    assert got.status_code == 201, got.text
    order = got.json()["data"]
    assert (order["key_id"], order["amount"], order["currency"], order["credits"]) == \
        (razorpay.key_id, 49900, "INR", 300)
    pay_id = razorpay.pay_order(order["order_id"])
    bad = server.post("/api/v1/payments/razorpay/verify", headers=auth, json={
        "order_id": order["order_id"], "payment_id": pay_id, "signature": "0" * 64})
    assert (bad.status_code, bad.json()["code"]) == (400, "INVALID_SIGNATURE")
    verify = {"order_id": order["order_id"], "payment_id": pay_id,
              "signature": signing.razorpay_payment_signature(order["order_id"], pay_id,
                                                              razorpay.key_secret)}
    ok = server.post("/api/v1/payments/razorpay/verify", headers=auth, json=verify)
    assert ok.status_code == 200, ok.text
    assert (ok.json()["data"]["credits_added"], ok.json()["data"]["credits_balance"]) == (300, 300)
    captured = signing.razorpay_payment_captured(razorpay.payments[pay_id])
    forged = deliver(server, "/api/webhooks/razorpay",
                     signing.razorpay_webhook_request(captured, "wrong-secret"))
    assert (forged.status_code, forged.json()["code"]) == (400, "INVALID_SIGNATURE")
    hook = deliver(server, "/api/webhooks/razorpay",
                   signing.razorpay_webhook_request(captured, razorpay.webhook_secret))
    assert hook.status_code == 200, hook.text
    again = server.post("/api/v1/payments/razorpay/verify", headers=auth, json=verify)
    assert again.status_code == 200 and again.json()["data"]["credits_balance"] == 300
    assert balance("pay_r") == 300 and purchase_grants(order["payment_id"]) == 1


def cron(server: LiveServer) -> None:
    # Cron: Basic auth from the environment; wrong credentials are 401 with the challenge.
    wrong = server.post("/api/distribute-credits", headers=basic("cron", "nope"))
    assert (wrong.status_code, wrong.json()["code"]) == (401, "AUTH_UNAUTHORIZED")
    assert wrong.headers["WWW-Authenticate"].startswith("Basic")
    cron = basic(LIVE_SECRETS["CRON_JOBS_USERNAME"], LIVE_SECRETS["CRON_JOBS_PASSWORD"])
    run = server.post("/api/distribute-credits", headers=cron)
    assert run.status_code == 200, run.text
    assert run.json() == {"success": True, "data": {"usersCount": 4, "processedCount": 4,
                                                    "errorCount": 0}}
    grants = entries(type="grant")
    rerun = server.post("/api/distribute-credits", headers=cron)  # cron fired twice
    assert rerun.status_code == 200 and rerun.json()["data"]["processedCount"] == 4
    assert entries(type="grant") == grants
