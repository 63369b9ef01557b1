"""Purchases and provider webhooks over real HTTP against gunicorn (2 workers, SQLite and
PostgreSQL): Stripe Checkout and a Razorpay order through the SDKs against the fakes, webhooks
signed with the providers' real algorithms, each payment credited exactly once whatever the
number and order of deliveries (verify, webhook, redelivery)."""
from __future__ import annotations

from sqlalchemy import func, select

from models import Customer, LedgerEntry, Payment, db
from services import ledger
from tests.fakes import signing
from tests.live import bearer


def balance(external_id: str) -> int:
    db.session.rollback()
    return ledger.balance(db.session.scalar(select(Customer.id)
                                            .where(Customer.external_id == external_id)))


def purchase_grants(payment_id: int) -> int:
    db.session.rollback()
    return db.session.scalar(select(func.count()).select_from(LedgerEntry).where(
        LedgerEntry.payment_id == payment_id, LedgerEntry.type == "grant"))


def test_purchases_and_signed_webhooks_over_real_http(live, make):
    _, key = make.api_key()
    make.customer(external_id="pay_s", email="s@example.com")
    make.customer(external_id="pay_r", email="r@example.com")
    usd = make.package(credits=500, price_minor=1999, currency="USD")
    inr = make.package(credits=300, price_minor=49900, currency="INR")
    server = live(workers=2)
    auth, stripe, razorpay = bearer(key), server.stripe, server.razorpay

    def deliver(path: str, request: tuple[bytes, dict]):
        body, headers = request
        return server.post(path, data=body, headers=headers)

    # Stripe: Checkout opened with our payment id; credits only when the signed event arrives.
    got = server.post("/api/v1/customers/pay_s/purchases", headers=auth,
                      json={"package_id": usd.id, "provider": "stripe"})
    assert got.status_code == 201, got.text
    buy = got.json()["data"]
    assert buy["checkout_url"].startswith(stripe.url) and buy["session_id"] in stripe.sessions
    assert balance("pay_s") == 0
    stripe.complete_session(buy["session_id"])
    event = signing.checkout_session_completed(stripe.sessions[buy["session_id"]])
    forged = deliver("/api/webhooks/stripe", signing.stripe_webhook_request(event, "whsec_wrong"))
    assert (forged.status_code, forged.json()["code"]) == (400, "INVALID_SIGNATURE")
    assert balance("pay_s") == 0
    signed = signing.stripe_webhook_request(event, stripe.webhook_secret)
    first, second = deliver("/api/webhooks/stripe", signed), deliver("/api/webhooks/stripe", signed)
    assert (first.status_code, second.status_code) == (200, 200), (first.text, second.text)
    assert (first.json()["data"]["duplicate"], second.json()["data"]["duplicate"]) == (False, True)
    assert balance("pay_s") == 500 and purchase_grants(buy["payment_id"]) == 1
    db.session.rollback()
    assert db.session.get(Payment, buy["payment_id"]).status == "paid"

    # Razorpay: order, Checkout's signature verified, then the webhook: credited once.
    got = server.post("/api/v1/customers/pay_r/purchases", headers=auth,
                      json={"package_id": inr.id, "provider": "razorpay"})
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
    forged = deliver("/api/webhooks/razorpay",
                     signing.razorpay_webhook_request(captured, "wrong-secret"))
    assert (forged.status_code, forged.json()["code"]) == (400, "INVALID_SIGNATURE")
    hook = deliver("/api/webhooks/razorpay",
                   signing.razorpay_webhook_request(captured, razorpay.webhook_secret))
    assert hook.status_code == 200, hook.text
    again = server.post("/api/v1/payments/razorpay/verify", headers=auth, json=verify)
    assert again.status_code == 200 and again.json()["data"]["credits_balance"] == 300
    assert balance("pay_r") == 300 and purchase_grants(order["payment_id"]) == 1
    assert "Traceback" not in server.log(), server.log()[-3000:]
