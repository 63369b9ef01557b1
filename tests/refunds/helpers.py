"""Helpers of the refund tests (holds no tests): purchases paid at the provider fakes, counters."""
from __future__ import annotations

from sqlalchemy import func, select

from models import Customer, LedgerEntry, Payment, Refund, db
from services.ledger import posting as ledger
from tests.fakes import signing
from tests.payments.helpers import buy, send_razorpay, send_stripe, verify


def fresh(model, pk: int):
    db.session.rollback()
    return db.session.get(model, pk)


def stripe_purchase(pay_app, pay_api, make, stripe_server, *, external_id: str = "s-1",
                    credits: int = 1000, price_minor: int = 1000) -> Payment:
    """A package bought through Stripe Checkout, paid at the fake, credited by its webhook."""
    make.customer(external_id=external_id)
    pack = make.package(credits=credits, price_minor=price_minor, currency="USD")
    data = buy(pay_api, external_id, "stripe", package_id=pack.id)
    stripe_server.complete_session(data["session_id"])
    session = stripe_server.sessions[data["session_id"]]
    status, body = send_stripe(pay_app.test_client(), signing.checkout_session_completed(session),
                               stripe_server.webhook_secret)
    assert status == 200 and body["data"]["status"] == "processed", body
    return fresh(Payment, data["payment_id"])


def razorpay_purchase(pay_app, pay_api, make, razorpay_server, *, external_id: str = "r-1",
                      credits: int = 1000, price_minor: int = 100000) -> Payment:
    """A package bought through a Razorpay order, paid at the fake, verified."""
    make.customer(external_id=external_id)
    pack = make.package(credits=credits, price_minor=price_minor, currency="INR")
    order = buy(pay_api, external_id, "razorpay", package_id=pack.id)
    pay_id = razorpay_server.pay_order(order["order_id"])
    status, body = verify(pay_api, order["order_id"], pay_id,
                          razorpay_server.payment_signature(order["order_id"], pay_id))
    assert status == 200, body
    return fresh(Payment, order["payment_id"])


def purchase(provider: str, pay_app, pay_api, make, stripe_server, razorpay_server, **kw) -> Payment:
    if provider == "stripe":
        return stripe_purchase(pay_app, pay_api, make, stripe_server, **kw)
    return razorpay_purchase(pay_app, pay_api, make, razorpay_server, **kw)


def fake_of(provider: str, stripe_server, razorpay_server):
    return stripe_server if provider == "stripe" else razorpay_server


def refund_requests(provider: str, fake) -> list:
    """Refund-creating requests the fake received (injected failures included)."""
    if provider == "stripe":
        return fake.requests_to("POST", "/v1/refunds")
    return [r for r in fake.requests_to("POST", "/v1/payments/") if r.path.endswith("/refund")]


def idempotency_header(provider: str, req) -> str | None:
    return req.header("Idempotency-Key" if provider == "stripe" else "X-Refund-Idempotency")


def clawbacks(payment_id: int) -> list[LedgerEntry]:
    db.session.rollback()
    return list(db.session.scalars(select(LedgerEntry).where(
        LedgerEntry.payment_id == payment_id, LedgerEntry.type == "clawback")
        .order_by(LedgerEntry.id)))


def refund_rows(payment_id: int) -> list[Refund]:
    db.session.rollback()
    return list(db.session.scalars(select(Refund).where(Refund.payment_id == payment_id)
                                   .order_by(Refund.id)))


def balance_of(customer_id: int) -> int:
    db.session.rollback()
    return ledger.balance(customer_id)


def spend(customer_id: int, credits: int, key: str) -> None:
    ledger.debit(customer_id=customer_id, credits=credits, feature="chat", key=key)


def refund_webhook(provider: str, pay_app, fake, refund: dict, *, previously_refunded: int = 0):
    """Deliver the provider's refund event (`charge.refunded` / `refund.processed`) for `refund`."""
    client = pay_app.test_client()
    if provider == "stripe":
        charge = fake.charges[refund["charge"]]
        event = signing.charge_refunded(charge, previously_refunded=previously_refunded)
        return send_stripe(client, event, fake.webhook_secret)
    event = signing.razorpay_refund_processed(refund, fake.payments[refund["payment_id"]])
    return send_razorpay(client, event, fake.webhook_secret)


def customer_count() -> int:
    return db.session.scalar(select(func.count()).select_from(Customer))
