"""The provider adapters, driven through the real SDKs against the local fakes."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import time

import flask
import pytest
import requests

from services.core.errors import InvalidSignature, PaymentProviderError
from services.providers import razorpay as rzp
from services.providers import stripe as stp
from tests.fakes import signing


@pytest.fixture
def provider_app(payment_provider_config):
    """A bare Flask app whose config points both SDKs at the fakes; no database needed."""
    app = flask.Flask(__name__)
    app.config.update(payment_provider_config, PAYMENT_PROVIDER_TIMEOUT=2)
    with app.app_context():
        yield app


def checkout(**overrides):
    params = dict(
        mode="payment", amount_minor=1999, currency="USD", product_name="100 credits",
        credits=100, customer_ref="ana@example.com", client_reference_id="purchase-17",
        metadata={"customer_id": 42, "package_id": 3},
        success_url="http://127.0.0.1:5000/done?session_id={CHECKOUT_SESSION_ID}",
        cancel_url="http://127.0.0.1:5000/cancelled", idempotency_key="purchase-17-checkout",
    )
    return stp.create_checkout_session(**{**params, **overrides})


def paid_payment(stripe_server):
    session = checkout()
    return stripe_server.complete_session(session["id"])


def assert_no_secrets(text, config):
    for key in ("STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "RAZORPAY_KEY_SECRET",
                "RAZORPAY_WEBHOOK_SECRET"):
        assert config[key] not in text


# -- Stripe: API calls ------------------------------------------------------------------------
def test_checkout_session_reaches_stripe_with_our_idempotency_key(provider_app, stripe_server):
    session = checkout()

    assert session["id"].startswith("cs_test_")
    assert session["url"].startswith(stripe_server.url)
    assert session["payment_intent"] is None  # Stripe creates it only when the customer pays
    sent = stripe_server.requests_to("POST", "/v1/checkout/sessions")[0]
    assert sent.header("Idempotency-Key") == "purchase-17-checkout"
    assert sent.header("Authorization") == f"Bearer {stripe_server.api_key}"
    assert sent.header("Content-Type") == "application/x-www-form-urlencoded"
    assert sent.body["mode"] == "payment"
    assert sent.body["line_items"] == [{"quantity": "1", "price_data": {
        "currency": "usd", "unit_amount": "1999",
        "product_data": {"name": "100 credits", "metadata": {"credits": "100"}}}}]
    tags = {"customer_id": "42", "package_id": "3", "credits": "100"}
    assert sent.body["metadata"] == tags
    assert sent.body["payment_intent_data"] == {"metadata": tags}
    assert sent.body["client_reference_id"] == "purchase-17"
    assert sent.body["customer_email"] == "ana@example.com"


def test_checkout_retry_with_the_same_key_gets_the_same_session(provider_app, stripe_server):
    first, again = checkout(), checkout()

    assert again["id"] == first["id"]
    assert len(stripe_server.sessions) == 1


def test_subscription_checkout_uses_a_recurring_price(provider_app, stripe_server):
    checkout(mode="subscription", customer_ref="cus_Existing0001", interval="year",
             idempotency_key="sub-1")

    body = stripe_server.last_request.body
    assert body["line_items"][0]["price_data"]["recurring"] == {"interval": "year"}
    assert body["customer"] == "cus_Existing0001"
    assert "payment_intent_data" not in body and body["subscription_data"]["metadata"]


def test_subscription_checkout_uses_price_id_when_given(provider_app, stripe_server):
    price_id = stripe_server.add_price(unit_amount=999, currency="usd", interval="month")

    session = checkout(mode="subscription", price_id=price_id, idempotency_key="sub-2")
    stripe_server.complete_session(session["id"])
    done = stp.retrieve_checkout_session(session["id"])

    assert stripe_server.last_request.path == f"/v1/checkout/sessions/{session['id']}"
    assert stripe_server.requests_to("POST", "/v1/checkout")[0].body["line_items"] == [
        {"price": price_id, "quantity": "1"}]
    assert done["subscription"].startswith("sub_") and done["payment_intent"] is None
    invoice = stp.retrieve_invoice(done["invoice"])
    assert invoice["payments"]["data"][0]["payment"]["payment_intent"].startswith("pi_")


def test_completed_session_shows_its_payment_intent(provider_app, stripe_server):
    session = checkout()
    payment_intent = stripe_server.complete_session(session["id"])

    done = stp.retrieve_checkout_session(session["id"])

    assert (done["status"], done["payment_status"]) == ("complete", "paid")
    assert done["payment_intent"] == payment_intent


def test_refund_reaches_stripe_once_per_idempotency_key(provider_app, stripe_server):
    payment_intent = paid_payment(stripe_server)

    refund = stp.create_refund(payment_intent=payment_intent, amount_minor=500,
                               idempotency_key="refund-9", metadata={"refund_id": 9})
    again = stp.create_refund(payment_intent=payment_intent, amount_minor=500,
                              idempotency_key="refund-9", metadata={"refund_id": 9})

    assert again == refund and refund["status"] == "succeeded"
    sent = stripe_server.requests_to("POST", "/v1/refunds")
    assert [r.header("Idempotency-Key") for r in sent] == ["refund-9", "refund-9"]
    assert sent[0].body == {"payment_intent": payment_intent, "amount": "500",
                            "metadata": {"refund_id": "9"}}
    charge = stripe_server.charges[stripe_server.payment_intents[payment_intent]["latest_charge"]]
    assert charge["amount_refunded"] == 500


def test_refund_above_what_is_left_is_a_provider_error(provider_app, stripe_server):
    payment_intent = paid_payment(stripe_server)

    with pytest.raises(PaymentProviderError, match="greater than unrefunded amount") as err:
        stp.create_refund(payment_intent=payment_intent, amount_minor=5000,
                          idempotency_key="refund-10", metadata={})

    assert err.value.details["http_status"] == 400


def test_reusing_a_key_for_another_request_is_refused(provider_app, stripe_server):
    checkout()

    with pytest.raises(PaymentProviderError, match="same parameters"):
        checkout(amount_minor=2999)


@pytest.mark.parametrize("fault", [{"status": 500}, {"status": 503}, {"status": 429},
                                   {"drop": True}])
def test_stripe_failures_become_retryable_provider_errors(provider_app, stripe_server, fault,
                                                          caplog):
    stripe_server.fail_next(1, **fault)

    with pytest.raises(PaymentProviderError) as err:
        checkout()
    session = checkout()  # the caller's retry, same key

    assert (err.value.status, err.value.code, err.value.retryable) == (
        502, "PAYMENT_PROVIDER_ERROR", True)
    assert_no_secrets(str(err.value) + repr(err.value.details), provider_app.config)
    assert_no_secrets(" ".join(repr(r.__dict__) for r in caplog.records), provider_app.config)
    assert list(stripe_server.sessions) == [session["id"]]
    assert len(stripe_server.requests_to("POST", "/v1/checkout")) == 2  # the SDK never retried


def test_slow_stripe_times_out_as_a_provider_error(provider_app, stripe_server):
    provider_app.config["PAYMENT_PROVIDER_TIMEOUT"] = 0.2
    stripe_server.delay_next(1, seconds=1)

    with pytest.raises(PaymentProviderError, match="could not reach Stripe"):
        checkout()


def test_a_secret_echoed_by_the_provider_is_redacted(provider_app, stripe_server):
    key = provider_app.config["STRIPE_SECRET_KEY"]
    stripe_server.fail_next(1, status=401, body={"error": {
        "type": "invalid_request_error", "message": f"Invalid API Key provided: {key}"}})

    with pytest.raises(PaymentProviderError) as err:
        checkout()

    assert key not in str(err.value) and "[redacted]" in str(err.value)


def test_unconfigured_stripe_fails_before_any_request(provider_app, stripe_server):
    provider_app.config["STRIPE_SECRET_KEY"] = None

    assert not stp.configured()
    with pytest.raises(PaymentProviderError, match="not configured"):
        checkout()
    assert stripe_server.requests == []


@pytest.mark.parametrize("amount", [19.99, 0, -5, True, "1999"])
def test_money_is_positive_integer_minor_units(provider_app, amount):
    with pytest.raises(ValueError, match="minor units"):
        checkout(amount_minor=amount)
    with pytest.raises(ValueError, match="minor units"):
        rzp.create_order(amount_minor=amount, currency="INR", receipt="r", notes={})


def test_hosted_checkout_page_completes_and_redirects(provider_app, stripe_server):
    session = checkout()

    answer = requests.post(session["url"], allow_redirects=False, timeout=5)

    assert answer.status_code == 303
    assert answer.headers["Location"].endswith(f"session_id={session['id']}")
    assert stripe_server.sessions[session["id"]]["payment_intent"].startswith("pi_")


# -- Stripe: webhooks -------------------------------------------------------------------------
def stripe_delivery(event, secret, timestamp=None):
    return signing.stripe_webhook_request(event, secret, timestamp=timestamp)


def test_signed_stripe_event_is_accepted(provider_app, stripe_server):
    session = checkout()
    stripe_server.complete_session(session["id"])
    event = signing.checkout_session_completed(stripe_server.sessions[session["id"]])
    body, headers = stripe_delivery(event, stripe_server.webhook_secret)

    got = stp.construct_event(body, headers["Stripe-Signature"])

    assert got["type"] == "checkout.session.completed"
    assert got["data"]["object"]["client_reference_id"] == "purchase-17"
    assert got["data"]["object"]["payment_intent"].startswith("pi_")


@pytest.mark.parametrize("age, accepted", [(299, True), (301, False)])
def test_stripe_signature_tolerance_is_five_minutes(provider_app, stripe_server, age, accepted):
    event = signing.charge_refunded(
        {"id": "ch_1", "object": "charge", "amount": 500, "amount_refunded": 500})
    # ceil: a whole-second stamp never older than `age`, whatever the clock's fraction
    body, headers = stripe_delivery(event, stripe_server.webhook_secret,
                                    timestamp=math.ceil(time.time()) - age)

    if accepted:
        assert stp.construct_event(body, headers["Stripe-Signature"])["type"] == "charge.refunded"
    else:
        with pytest.raises(InvalidSignature):
            stp.construct_event(body, headers["Stripe-Signature"])


@pytest.mark.parametrize("case", ["tampered", "wrong_secret", "missing", "garbage",
                                  "unconfigured"])
def test_bad_stripe_webhooks_are_invalid_signatures(provider_app, stripe_server, case):
    event = signing.invoice_paid(signing.invoice_object(subscription=signing.subscription_object(
        customer="cus_1", price=signing.price_object(unit_amount=999, interval="month"))))
    secret = "whsec_other" if case == "wrong_secret" else stripe_server.webhook_secret
    body, headers = stripe_delivery(event, secret)
    header = {"missing": None, "garbage": "not-a-signature"}.get(case,
                                                                 headers["Stripe-Signature"])
    if case == "tampered":
        body = body.replace(b'"amount_paid": 999', b'"amount_paid": 99900')
    if case == "unconfigured":
        provider_app.config["STRIPE_WEBHOOK_SECRET"] = None

    with pytest.raises(InvalidSignature) as err:
        stp.construct_event(body, header)

    assert err.value.status == 400
    if case == "unconfigured":
        assert str(err.value) == "Stripe webhooks are not configured"


def test_every_stripe_event_builder_round_trips(provider_app, stripe_server):
    price = signing.price_object(unit_amount=999, interval="month")
    sub = signing.subscription_object(customer="cus_1", price=price, metadata={"plan": "pro"})
    events = [
        signing.checkout_session_completed(amount_total=500, client_reference_id="p-1"),
        signing.invoice_paid(signing.invoice_object(subscription=sub)),
        signing.subscription_updated(sub, previous_attributes={"cancel_at_period_end": True}),
        signing.subscription_deleted(sub),
        signing.charge_refunded({"id": "ch_1", "object": "charge", "amount_refunded": 500}),
    ]
    for event in events:
        body, headers = stripe_delivery(event, stripe_server.webhook_secret)
        assert stp.construct_event(body, headers["Stripe-Signature"]) == event
    invoice = events[1]["data"]["object"]
    assert invoice["parent"]["subscription_details"]["subscription"] == sub["id"]
    assert events[3]["data"]["object"]["status"] == "canceled"


# -- Razorpay: API calls ----------------------------------------------------------------------
def test_order_is_created_with_basic_auth_and_json(provider_app, razorpay_server):
    order = rzp.create_order(amount_minor=49900, currency="inr", receipt="purchase-17",
                             notes={"customer_id": 42})

    assert order["id"].startswith("order_") and order["status"] == "created"
    assert (order["amount"], order["currency"]) == (49900, "INR")
    sent = razorpay_server.requests_to("POST", "/v1/orders")[0]
    user, _, password = base64.b64decode(sent.header("Authorization").split()[1]).decode() \
        .partition(":")
    assert (user, password) == (razorpay_server.key_id, razorpay_server.key_secret)
    assert sent.header("Content-Type") == "application/json"
    assert sent.body == {"amount": 49900, "currency": "INR", "receipt": "purchase-17",
                         "notes": {"customer_id": "42"}}
    assert rzp.key_id() == razorpay_server.key_id


def test_empty_notes_come_back_as_an_object(provider_app, razorpay_server):
    order = rzp.create_order(amount_minor=10000, currency="INR", receipt="r-1", notes={})

    assert razorpay_server.orders[order["id"]]["notes"] == []  # what Razorpay really sends
    assert order["notes"] == {}


def test_paid_order_and_payment_can_be_fetched(provider_app, razorpay_server):
    order = rzp.create_order(amount_minor=49900, currency="INR", receipt="r-2", notes={})
    payment_id = razorpay_server.pay_order(order["id"])

    payment = rzp.fetch_payment(payment_id)

    assert (payment["status"], payment["order_id"], payment["amount"]) == (
        "captured", order["id"], 49900)
    assert rzp.fetch_order(order["id"])["status"] == "paid"


@pytest.mark.parametrize("key", ["refund-0042-a", "r-1", "refund 42/á"])
def test_refund_is_idempotent_by_header(provider_app, razorpay_server, key):
    order = rzp.create_order(amount_minor=49900, currency="INR", receipt="r-3", notes={})
    payment_id = razorpay_server.pay_order(order["id"])

    refund = rzp.create_refund(payment_id=payment_id, amount_minor=10000, idempotency_key=key,
                               notes={"refund_id": 5})
    again = rzp.create_refund(payment_id=payment_id, amount_minor=10000, idempotency_key=key,
                              notes={"refund_id": 5})

    assert again == refund and refund["status"] == "processed"
    assert len(razorpay_server.refunds) == 1
    sent = razorpay_server.requests_to("POST", f"/v1/payments/{payment_id}/refund")[0]
    assert len(sent.header("X-Refund-Idempotency")) >= 10
    assert sent.body["receipt"] == key[:40]
    assert sent.body["notes"] == {"idempotency_key": key, "refund_id": "5"}
    assert razorpay_server.payments[payment_id]["amount_refunded"] == 10000


@pytest.mark.parametrize("fault", [{"status": 500}, {"status": 502}, {"drop": True}])
def test_razorpay_failures_become_retryable_provider_errors(provider_app, razorpay_server, fault,
                                                            caplog, capsys):
    razorpay_server.fail_next(1, **fault)

    with pytest.raises(PaymentProviderError) as err:
        rzp.create_order(amount_minor=10000, currency="INR", receipt="r-4", notes={})
    order = rzp.create_order(amount_minor=10000, currency="INR", receipt="r-4", notes={})

    assert err.value.retryable and err.value.status == 502
    assert list(razorpay_server.orders) == [order["id"]]
    out = capsys.readouterr()
    text = str(err.value) + " ".join(repr(r.__dict__) for r in caplog.records) + out.out
    assert_no_secrets(text, provider_app.config)


def test_slow_razorpay_times_out_as_a_provider_error(provider_app, razorpay_server):
    provider_app.config["PAYMENT_PROVIDER_TIMEOUT"] = 0.2
    razorpay_server.delay_next(1, seconds=1)

    with pytest.raises(PaymentProviderError, match="did not answer in time"):
        rzp.fetch_order("order_Missing0000001")


def test_wrong_razorpay_credentials_are_a_provider_error(provider_app, razorpay_server):
    provider_app.config["RAZORPAY_KEY_SECRET"] = "not-the-secret-at-all"

    with pytest.raises(PaymentProviderError, match="Authentication failed") as err:
        rzp.fetch_payment("pay_Anything000001")

    assert "not-the-secret-at-all" not in str(err.value)


def test_unknown_razorpay_id_is_a_provider_error(provider_app, razorpay_server):
    with pytest.raises(PaymentProviderError, match="does not exist"):
        rzp.fetch_payment("pay_Missing0000001")


# -- Razorpay: signatures ---------------------------------------------------------------------
def test_checkout_payment_signature_verifies(provider_app, razorpay_server):
    order = rzp.create_order(amount_minor=10000, currency="INR", receipt="r-5", notes={})
    payment_id = razorpay_server.pay_order(order["id"])
    signature = razorpay_server.payment_signature(order["id"], payment_id)
    by_hand = hmac.new(razorpay_server.key_secret.encode(),
                       f"{order['id']}|{payment_id}".encode(), hashlib.sha256).hexdigest()

    assert signature == by_hand
    assert rzp.verify_payment_signature(order_id=order["id"], payment_id=payment_id,
                                        signature=signature) is None


@pytest.mark.parametrize("case", ["tampered", "wrong_secret", "missing", "non_ascii",
                                  "unconfigured"])
def test_bad_payment_signatures_are_refused(provider_app, razorpay_server, case):
    order_id, payment_id = "order_Abc0000000001", "pay_Abc00000000001"
    secret = "other-secret" if case == "wrong_secret" else razorpay_server.key_secret
    signature = signing.razorpay_payment_signature(order_id, payment_id, secret)
    signature = {"missing": "", "non_ascii": "é" * 64}.get(case, signature)
    if case == "tampered":
        payment_id = "pay_Abc00000000002"
    if case == "unconfigured":
        provider_app.config["RAZORPAY_KEY_SECRET"] = None

    with pytest.raises(InvalidSignature):
        rzp.verify_payment_signature(order_id=order_id, payment_id=payment_id,
                                     signature=signature)


def test_signed_razorpay_webhook_verifies(provider_app, razorpay_server):
    order = rzp.create_order(amount_minor=10000, currency="INR", receipt="r-6", notes={})
    payment_id = razorpay_server.pay_order(order["id"])
    event = signing.razorpay_order_paid(razorpay_server.orders[order["id"]],
                                        razorpay_server.payments[payment_id])
    body, headers = signing.razorpay_webhook_request(event, razorpay_server.webhook_secret)

    rzp.verify_webhook_signature(body=body, signature=headers["X-Razorpay-Signature"])

    parsed = json.loads(body)
    assert parsed["contains"] == ["payment", "order"]
    assert parsed["payload"]["payment"]["entity"]["order_id"] == order["id"]
    assert headers["X-Razorpay-Event-Id"]


def test_every_razorpay_event_builder_verifies(provider_app, razorpay_server):
    payment = signing.payment_entity(amount=10000, order_id="order_X000000000001")
    events = [signing.razorpay_payment_captured(payment),
              signing.razorpay_order_paid(signing.order_entity(amount=10000), payment),
              signing.razorpay_refund_processed(
                  signing.refund_entity(payment_id=payment["id"], amount=500), payment)]
    for event in events:
        body, headers = signing.razorpay_webhook_request(event, razorpay_server.webhook_secret)
        rzp.verify_webhook_signature(body=body, signature=headers["X-Razorpay-Signature"])
        assert json.loads(body)["payload"]["payment"]["entity"]["id"] == payment["id"]
    assert [e["contains"] for e in events] == [["payment"], ["payment", "order"],
                                               ["refund", "payment"]]


@pytest.mark.parametrize("case", ["tampered", "wrong_secret", "missing", "unconfigured"])
def test_bad_razorpay_webhooks_are_refused(provider_app, razorpay_server, case):
    payment = signing.payment_entity(amount=10000, order_id="order_X000000000001")
    refund = signing.refund_entity(payment_id=payment["id"], amount=10000)
    event = signing.razorpay_refund_processed(refund, payment)
    secret = "other-secret" if case == "wrong_secret" else razorpay_server.webhook_secret
    body, headers = signing.razorpay_webhook_request(event, secret)
    signature = None if case == "missing" else headers["X-Razorpay-Signature"]
    if case == "tampered":
        body = body.replace(b'"amount":10000', b'"amount":1000000', 1)
    if case == "unconfigured":
        provider_app.config["RAZORPAY_WEBHOOK_SECRET"] = None

    with pytest.raises(InvalidSignature):
        rzp.verify_webhook_signature(body=body, signature=signature)


# -- the fakes themselves ---------------------------------------------------------------------
def test_injected_failures_can_target_one_path(provider_app, razorpay_server):
    razorpay_server.fail_next(1, status=500, path="/v1/payments")
    order = rzp.create_order(amount_minor=10000, currency="INR", receipt="r-7", notes={})
    payment_id = razorpay_server.pay_order(order["id"])

    with pytest.raises(PaymentProviderError):
        rzp.fetch_payment(payment_id)
    assert rzp.fetch_payment(payment_id)["id"] == payment_id
    assert [r.injected for r in razorpay_server.requests] == [False, True, False]


def test_customer_webhook_header_uses_timestamped_hmac():
    body = b'{"id": "evt_1", "type": "user.created"}'

    header = signing.customer_webhook_header(body, "s3cret", timestamp=1700000000)

    expected = hmac.new(b"s3cret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
