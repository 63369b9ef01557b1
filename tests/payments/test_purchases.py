"""Purchases through the real SDKs against the provider fakes; Razorpay verify."""
from __future__ import annotations

from models import CreditGrant, Customer, Payment, db, utcnow
from services.ledger import reconcile
from tests.fakes import signing
from tests.helpers import ApiClient, assert_error
from tests.payments.helpers import buy, counts, grants_of, payment, send_razorpay, verify


def made_id(stripe_server) -> str:
    [cid] = stripe_server.customers
    return cid


# --- Stripe Checkout -----------------------------------------------------------------------------

def test_stripe_package_purchase_records_our_payment_first_and_opens_checkout(pay_api, make,
                                                                               stripe_server):
    make.customer(external_id="u-1", email="ana@example.com")
    pack = make.package(credits=500, price_minor=1999, currency="USD", name="500 credits")

    data = buy(pay_api, "u-1", "stripe", package_id=pack.id)

    assert data["checkout_url"].startswith(stripe_server.url + "/c/pay/")
    assert data["session_id"] in stripe_server.sessions
    sent = stripe_server.requests_to("POST", "/v1/checkout/sessions")[0]
    # Our own id was created and committed before the call, and is the idempotency key.
    assert sent.header("Idempotency-Key") == f"creditdesk-payment-{data['payment_id']}"
    assert sent.body["mode"] == "payment"
    assert sent.body["client_reference_id"] == str(data["payment_id"])
    assert sent.body["metadata"]["creditdesk_payment_id"] == str(data["payment_id"])
    assert sent.body["line_items"][0]["price_data"]["unit_amount"] == "1999"
    # A Stripe Customer owns the card, saved for auto top-up (docs/auto_topup.md).
    [made] = stripe_server.requests_to("POST", "/v1/customers")
    assert made.body["email"] == "ana@example.com"
    assert made.header("Idempotency-Key") == f"creditdesk-customer-{payment(data['payment_id']).customer_id}"
    assert sent.body["customer"] == made_id(stripe_server)
    assert sent.body["payment_intent_data"]["setup_future_usage"] == "off_session"
    p = payment(data["payment_id"])
    assert (p.status, p.kind, p.provider_order_id, p.amount_minor, p.credits) == \
        ("created", "package", data["session_id"], 1999, 500)
    assert grants_of(p.id) == []  # nothing is credited before Stripe says it is paid


def test_stripe_plan_purchase_opens_a_subscription_checkout(pay_api, make, stripe_server):
    make.customer(external_id="u-2")
    plan = make.plan(interval="month", monthly_credits=1000, price_minor=1900)

    data = buy(pay_api, "u-2", "stripe", plan_id=plan.id,
               success_url="https://app.example.com/done", cancel_url="https://app.example.com/no")

    sent = stripe_server.requests_to("POST", "/v1/checkout/sessions")[0]
    assert sent.body["mode"] == "subscription"
    assert sent.body["line_items"][0]["price_data"]["recurring"] == {"interval": "month"}
    assert sent.body["subscription_data"]["metadata"]["plan_id"] == str(plan.id)
    assert sent.body["success_url"] == "https://app.example.com/done"
    assert payment(data["payment_id"]).kind == "subscription"


def test_stripe_failure_is_502_retryable_payment_failed_nothing_granted(pay_api, make,
                                                                         stripe_server):
    make.customer(external_id="u-3")
    pack = make.package()
    stripe_server.fail_next(1, 500)
    before = counts()

    status, body, _ = pay_api.post("/api/v1/customers/u-3/purchases",
                                   {"provider": "stripe", "package_id": pack.id})

    assert_error(status, body, "PAYMENT_PROVIDER_ERROR", 502, retryable=True)
    after = counts()
    assert after["LedgerEntry"] == before["LedgerEntry"] and after["CreditGrant"] == 0
    p = db.session.query(Payment).one()
    assert p.status == "failed" and p.provider_order_id is None and "Stripe" in p.meta["error"]


def test_stripe_unreachable_is_502(pay_app, pay_api, make):
    make.customer(external_id="u-4")
    pack = make.package()
    pay_app.config["STRIPE_API_BASE"] = "http://127.0.0.1:9"  # nothing listens there

    status, body, _ = pay_api.post("/api/v1/customers/u-4/purchases",
                                   {"provider": "stripe", "package_id": pack.id})

    assert_error(status, body, "PAYMENT_PROVIDER_ERROR", 502, retryable=True)
    assert payment(1).status == "failed"


# --- Razorpay order and verify ------------------------------------------------------------------

def test_razorpay_order_then_verify_grants_once(pay_api, make, razorpay_server):
    c = make.customer(external_id="u-5")
    pack = make.package(credits=300, price_minor=49900, currency="INR", expiry_days=365)

    data = buy(pay_api, "u-5", "razorpay", package_id=pack.id)

    assert set(data) >= {"order_id", "key_id", "amount", "currency", "credits"}
    assert (data["key_id"], data["amount"], data["currency"], data["credits"]) == \
        (razorpay_server.key_id, 49900, "INR", 300)
    order = razorpay_server.orders[data["order_id"]]
    assert order["receipt"] == f"payment_{data['payment_id']}"
    assert order["notes"]["creditdesk_payment_id"] == str(data["payment_id"])

    pay_id = razorpay_server.pay_order(data["order_id"])
    sig = razorpay_server.payment_signature(data["order_id"], pay_id)
    first = verify(pay_api, data["order_id"], pay_id, sig)
    again = verify(pay_api, data["order_id"], pay_id, sig)

    assert first == (200, {"success": True, "data": {"credits_balance": 300, "credits_added": 300,
                                                      "payment_id": data["payment_id"]}})
    assert again[1]["data"]["credits_added"] == 300 and again[1]["data"]["credits_balance"] == 300
    [entry] = grants_of(data["payment_id"])
    assert entry.idempotency_key == f"payment:razorpay:{pay_id}"
    grant = db.session.get(CreditGrant, entry.grant_id)
    assert (grant.source, grant.cost_minor, grant.currency) == ("purchase", 49900, "INR")
    assert grant.expires_at is not None
    p = payment(data["payment_id"])
    assert (p.status, p.provider_payment_id) == ("paid", pay_id)
    assert db.session.get(Customer, c.id).balance == 300
    assert reconcile.run().ok


def test_verify_after_the_webhook_answers_the_same_and_credits_nothing_more(
        pay_app, pay_api, make, razorpay_server):
    make.customer(external_id="u-6")
    pack = make.package(credits=100, price_minor=1000, currency="INR")
    data = buy(pay_api, "u-6", "razorpay", package_id=pack.id)
    pay_id = razorpay_server.pay_order(data["order_id"])
    event = signing.razorpay_payment_captured(razorpay_server.payments[pay_id])
    assert send_razorpay(pay_app.test_client(), event, razorpay_server.webhook_secret)[0] == 200

    status, body = verify(pay_api, data["order_id"], pay_id,
                          razorpay_server.payment_signature(data["order_id"], pay_id))

    assert status == 200 and body["data"]["credits_added"] == 100
    assert len(grants_of(data["payment_id"])) == 1


def test_verify_rejects_bad_signatures_and_foreign_orders_without_writing(pay_api, make,
                                                                          razorpay_server):
    make.customer(external_id="u-7")
    pack = make.package(credits=100, price_minor=1000, currency="INR")
    data = buy(pay_api, "u-7", "razorpay", package_id=pack.id)
    pay_id = razorpay_server.pay_order(data["order_id"])
    good = razorpay_server.payment_signature(data["order_id"], pay_id)
    before = counts()

    tampered = verify(pay_api, data["order_id"], pay_id, good[:-1] + ("0" if good[-1] != "0" else "1"))
    other_payment = verify(pay_api, data["order_id"], "pay_Other000000001", good)
    wrong_key = verify(pay_api, data["order_id"], pay_id,
                       signing.razorpay_payment_signature(data["order_id"], pay_id, "not-the-secret"))
    foreign = "order_NotStartedHere1"
    not_ours = verify(pay_api, foreign, pay_id,
                      razorpay_server.payment_signature(foreign, pay_id))

    for status, body in (tampered, other_payment, wrong_key):
        assert_error(status, body, "INVALID_SIGNATURE", 400)
    assert_error(*not_ours, "NOT_FOUND", 404)
    assert counts() == before


def test_razorpay_plan_purchase_is_refused(pay_api, make):
    make.customer(external_id="u-8")
    plan = make.plan()
    status, body, _ = pay_api.post("/api/v1/customers/u-8/purchases",
                                   {"provider": "razorpay", "plan_id": plan.id})
    assert_error(status, body, "VALIDATION_ERROR", 422)


def test_razorpay_failure_is_502_and_nothing_granted(pay_api, make, razorpay_server):
    make.customer(external_id="u-9")
    pack = make.package(price_minor=1000, currency="INR")
    razorpay_server.fail_next(1, 503)

    status, body, _ = pay_api.post("/api/v1/customers/u-9/purchases",
                                   {"provider": "razorpay", "package_id": pack.id})

    assert_error(status, body, "PAYMENT_PROVIDER_ERROR", 502, retryable=True)
    assert payment(1).status == "failed" and counts()["CreditGrant"] == 0
    # A retry is a new attempt with a new payment of ours, and succeeds.
    assert buy(pay_api, "u-9", "razorpay", package_id=pack.id)["payment_id"] == 2


# --- contract ------------------------------------------------------------------------------------

def test_purchase_contract_errors(pay_app, pay_api, make):
    make.customer(external_id="u-10")
    pack = make.package()
    archived = make.package(archived_at=utcnow())
    url = "/api/v1/customers/u-10/purchases"

    assert_error(*pay_api.post("/api/v1/customers/nobody/purchases",
                               {"provider": "stripe", "package_id": pack.id})[:2],
                 "CUSTOMER_NOT_FOUND", 404)
    assert_error(*pay_api.post(url, {"provider": "stripe", "package_id": archived.id})[:2],
                 "NOT_FOUND", 404)
    for bad in ({"provider": "paypal", "package_id": pack.id}, {"provider": "stripe"},
                {"provider": "stripe", "package_id": pack.id, "plan_id": 1},
                {"provider": "stripe", "package_id": "1"}, {"provider": "stripe", "package_id": 0},
                {"provider": "stripe", "package_id": 2**63},
                {"provider": "stripe", "package_id": pack.id, "success_url": "javascript:x"}):
        assert_error(*pay_api.post(url, bad)[:2], "VALIDATION_ERROR", 422)
    assert counts()["Payment"] == 0
    _, no_scope = make.api_key(scopes=["customers:read"])
    assert_error(*ApiClient(pay_app, no_scope).post(url, {"provider": "stripe",
                                                          "package_id": pack.id})[:2],
                 "AUTH_FORBIDDEN", 403)
    assert_error(*ApiClient(pay_app, None).post("/api/v1/payments/razorpay/verify",
                                                {"order_id": "o", "payment_id": "p",
                                                 "signature": "s"})[:2],
                 "AUTH_UNAUTHORIZED", 401)


def test_same_idempotency_key_replays_the_same_checkout(pay_api, make, stripe_server):
    make.customer(external_id="u-11")
    pack = make.package()
    body = {"provider": "stripe", "package_id": pack.id}
    headers = {"Idempotency-Key": "buy-11-a"}

    s1, b1, _ = pay_api.post("/api/v1/customers/u-11/purchases", body, headers=headers)
    s2, b2, r2 = pay_api.post("/api/v1/customers/u-11/purchases", body, headers=headers)

    assert (s1, s2) == (201, 201) and b1 == b2
    assert r2.headers.get("Idempotent-Replayed") == "true"
    assert len(stripe_server.sessions) == 1 and counts()["Payment"] == 1
