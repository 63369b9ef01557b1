"""Stripe and Razorpay webhooks: signatures, dedup under concurrency, refunds, subscriptions."""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select

from models import Customer, LedgerEntry, Refund, WebhookEvent, db
from services.ledger import posting as ledger
from services.ledger import reconcile
from services.providers import razorpay as rzp
from services.providers import stripe as stp
from tests.fakes import signing
from tests.helpers import assert_error
from tests.payments.helpers import (
    buy,
    counts,
    event_rows,
    grants_of,
    payment,
    send_razorpay,
    send_stripe,
    verify,
)


def balance(external_id: str) -> int:
    db.session.rollback()
    c = db.session.scalar(select(Customer).where(Customer.external_id == external_id))
    return ledger.balance(c.id)


def paid_checkout(pay_api, make, stripe_server, *, external_id="s-1", credits=1000,
                  price_minor=1000):
    """A package bought through Stripe Checkout and paid at the fake: (purchase, session)."""
    make.customer(external_id=external_id)
    pack = make.package(credits=credits, price_minor=price_minor, currency="USD")
    data = buy(pay_api, external_id, "stripe", package_id=pack.id)
    stripe_server.complete_session(data["session_id"])
    return data, stripe_server.sessions[data["session_id"]]


# --- deduplication ---------------------------------------------------------------------------------

def test_one_checkout_event_delivered_20_times_10_concurrently_grants_once(
        pay_app, pay_api, make, stripe_server):
    data, session = paid_checkout(pay_api, make, stripe_server, credits=700)
    body, headers = signing.stripe_webhook_request(signing.checkout_session_completed(session),
                                                   stripe_server.webhook_secret)
    db.session.rollback()

    def deliver(_):
        client = pay_app.test_client()  # each thread its own client, app context and session
        resp = client.post("/api/webhooks/stripe", data=body, headers=headers)
        return resp.status_code, resp.get_json()["data"]

    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(deliver, range(10)))
    answers += [deliver(i) for i in range(10)]

    assert [status for status, _ in answers] == [200] * 20
    assert sum(1 for _, d in answers if not d["duplicate"]) == 1
    assert {d["status"] for _, d in answers} == {"processed"}
    assert len(grants_of(data["payment_id"])) == 1
    assert balance("s-1") == 700
    assert db.session.scalar(select(WebhookEvent.attempts)) == 1
    assert event_rows() == [("checkout.session.completed", "processed", "")]
    assert reconcile.run().ok


@pytest.mark.parametrize("provider", ["stripe", "razorpay"])
def test_bad_signatures_are_rejected_and_write_nothing(pay_app, pay_api, make, stripe_server,
                                                       razorpay_server, provider):
    client = pay_app.test_client()
    if provider == "stripe":
        _, session = paid_checkout(pay_api, make, stripe_server)
        event, secret = signing.checkout_session_completed(session), stripe_server.webhook_secret
        url, header = "/api/webhooks/stripe", "Stripe-Signature"
        body, good = signing.stripe_webhook_request(event, secret)
    else:
        make.customer(external_id="r-1")
        pack = make.package(credits=10, price_minor=1000, currency="INR")
        order = buy(pay_api, "r-1", "razorpay", package_id=pack.id)
        pay_id = razorpay_server.pay_order(order["order_id"])
        event = signing.razorpay_payment_captured(razorpay_server.payments[pay_id])
        secret, url, header = razorpay_server.webhook_secret, "/api/webhooks/razorpay", \
            "X-Razorpay-Signature"
        body, good = signing.razorpay_webhook_request(event, secret)
    before = counts()
    tampered_body = body.replace(b'"amount', b'"amounT', 1)
    attempts = {
        "tampered body": (tampered_body, good),
        "wrong secret": signing.stripe_webhook_request(event, "whsec_wrong")
        if provider == "stripe" else signing.razorpay_webhook_request(event, "wrong-secret"),
        "missing header": (body, {k: v for k, v in good.items() if k != header}),
        "tampered signature": (body, {**good, header: signing.flip_last(good[header])}),
    }
    if provider == "stripe":
        attempts["301 s old"] = signing.stripe_webhook_request(
            event, secret, timestamp=int(time.time()) - 301)

    for name, (data, headers) in attempts.items():
        resp = client.post(url, data=data, headers=headers)
        assert_error(resp.status_code, resp.get_json(), "INVALID_SIGNATURE", 400), name

    assert counts() == before


def test_unknown_event_types_are_stored_as_ignored(pay_app, stripe_server, razorpay_server):
    client = pay_app.test_client()
    ping = signing.stripe_event("customer.created", {"id": "cus_1", "object": "customer"})
    assert send_stripe(client, ping, stripe_server.webhook_secret)[1]["data"]["status"] == "ignored"
    rz = signing.razorpay_event("payment.authorized", {"payment": {"id": "pay_x"}})
    assert send_razorpay(client, rz, razorpay_server.webhook_secret)[1]["data"]["status"] == "ignored"
    assert [r[:2] for r in event_rows()] == [("customer.created", "ignored"),
                                             ("payment.authorized", "ignored")]


def test_checkout_of_a_session_not_started_here_is_ignored(pay_app, stripe_server):
    event = signing.checkout_session_completed(amount_total=500, payment_intent="pi_foreign")
    status, body = send_stripe(pay_app.test_client(), event, stripe_server.webhook_secret)
    assert status == 200 and body["data"]["status"] == "ignored"
    assert counts()["LedgerEntry"] == 0


def test_amount_mismatch_fails_the_event_and_grants_nothing(pay_app, pay_api, make, stripe_server):
    data, session = paid_checkout(pay_api, make, stripe_server)
    forged = {**session, "amount_total": 1}  # signed by Stripe, yet not what we asked for

    status, body = send_stripe(pay_app.test_client(), signing.checkout_session_completed(forged),
                               stripe_server.webhook_secret)

    assert status == 200 and body["data"]["status"] == "failed"
    assert grants_of(data["payment_id"]) == []
    [(kind, state, error)] = event_rows()
    assert state == "failed" and "expected 1000" in error


# --- Stripe refunds ------------------------------------------------------------------------------

def stripe_refund(pay_app, stripe_server, pi: str, amount: int, key: str) -> dict:
    """Refund at the fake through the SDK; answers the charge.refunded event Stripe would send."""
    charge = stripe_server.charges[stripe_server.payment_intents[pi]["latest_charge"]]
    before = charge["amount_refunded"]
    stp.create_refund(payment_intent=pi, amount_minor=amount, idempotency_key=key, metadata={})
    return signing.charge_refunded(stripe_server.charges[charge["id"]], previously_refunded=before)


def test_charge_refunded_before_spending_claws_back_everything(pay_app, pay_api, make,
                                                              stripe_server):
    data, session = paid_checkout(pay_api, make, stripe_server, credits=1000, price_minor=1000)
    client, secret = pay_app.test_client(), stripe_server.webhook_secret
    send_stripe(client, signing.checkout_session_completed(session), secret)
    event = stripe_refund(pay_app, stripe_server, session["payment_intent"], 1000, "rf-1")

    first = send_stripe(client, event, secret)
    again = send_stripe(client, event, secret)

    assert first[1]["data"]["status"] == "processed" and again[1]["data"]["duplicate"]
    assert balance("s-1") == 0
    p = payment(data["payment_id"])
    assert (p.status, p.refunded_minor) == ("refunded", 1000)
    [refund] = db.session.scalars(select(Refund)).all()
    assert (refund.status, refund.amount_minor, refund.credits) == ("processed", 1000, 1000)
    assert reconcile.run().ok


def test_charge_refunded_after_partial_spending_takes_only_unused_credits(
        pay_app, pay_api, make, stripe_server):
    data, session = paid_checkout(pay_api, make, stripe_server, credits=1000, price_minor=1000)
    client, secret = pay_app.test_client(), stripe_server.webhook_secret
    send_stripe(client, signing.checkout_session_completed(session), secret)
    c = db.session.scalar(select(Customer).where(Customer.external_id == "s-1"))
    ledger.debit(customer_id=c.id, credits=700, feature="chat", key="spend-700")

    half = stripe_refund(pay_app, stripe_server, session["payment_intent"], 500, "rf-half")
    send_stripe(client, half, secret)
    assert balance("s-1") == 0  # half the money = 500 credits, but only 300 were unused

    rest = stripe_refund(pay_app, stripe_server, session["payment_intent"], 500, "rf-rest")
    send_stripe(client, rest, secret)

    assert balance("s-1") == 0
    clawbacks = db.session.scalars(select(LedgerEntry.amount).where(
        LedgerEntry.type == "clawback")).all()
    assert clawbacks == [-300]  # never more than unused; nothing left the second time
    refunds = db.session.scalars(select(Refund).order_by(Refund.id)).all()
    assert [(r.amount_minor, r.credits) for r in refunds] == [(500, 300), (500, 0)]
    assert payment(data["payment_id"]).status == "refunded"
    assert reconcile.run().ok


def test_partial_refund_claws_back_in_proportion(pay_app, pay_api, make, stripe_server):
    data, session = paid_checkout(pay_api, make, stripe_server, credits=1000, price_minor=3000)
    client, secret = pay_app.test_client(), stripe_server.webhook_secret
    send_stripe(client, signing.checkout_session_completed(session), secret)

    send_stripe(client, stripe_refund(pay_app, stripe_server, session["payment_intent"], 900,
                                      "rf-30"), secret)

    assert balance("s-1") == 700
    p = payment(data["payment_id"])
    assert (p.status, p.refunded_minor) == ("partially_refunded", 900)


def test_refund_that_overtakes_the_checkout_event_ends_in_the_same_state(
        pay_app, pay_api, make, stripe_server):
    data, session = paid_checkout(pay_api, make, stripe_server, credits=1000, price_minor=1000)
    client, secret = pay_app.test_client(), stripe_server.webhook_secret
    refund_event = stripe_refund(pay_app, stripe_server, session["payment_intent"], 1000, "rf-early")

    send_stripe(client, refund_event, secret)  # charge.refunded first
    send_stripe(client, signing.checkout_session_completed(session), secret)

    assert balance("s-1") == 0
    assert len(grants_of(data["payment_id"])) == 1
    assert payment(data["payment_id"]).status == "refunded"
    assert [r[1] for r in event_rows()] == ["processed", "processed"]
    assert reconcile.run().ok


# --- Stripe subscriptions ------------------------------------------------------------------------

def subscription_events(pay_api, make, stripe_server, external_id: str, t0: int):
    """Buy a monthly plan and pay it at the fake; answers its events in the order Stripe sends."""
    make.customer(external_id=external_id)
    plan = make.plan(interval="month", monthly_credits=1000, price_minor=1900,
                     credit_expiry_days=31, code=f"pro-{external_id}")
    data = buy(pay_api, external_id, "stripe", plan_id=plan.id)
    stripe_server.complete_session(data["session_id"])
    session = stripe_server.sessions[data["session_id"]]
    sub = stripe_server.subscriptions[session["subscription"]]
    invoice = stripe_server.invoices[session["invoice"]]
    past_due = {**sub, "status": "past_due"}
    ended = {**sub, "status": "canceled", "canceled_at": t0 + 40, "ended_at": t0 + 40}
    return plan, data, [
        signing.stripe_event("checkout.session.completed", session, created=t0),
        signing.stripe_event("invoice.paid", invoice, created=t0 + 1),
        signing.stripe_event("customer.subscription.updated", past_due, created=t0 + 20,
                             previous_attributes={"status": "active"}),
        signing.stripe_event("customer.subscription.deleted", ended, created=t0 + 40),
    ]


def state(external_id: str):
    db.session.rollback()
    c = db.session.scalar(select(Customer).where(Customer.external_id == external_id))
    return c.subscription_status, c.plan_id is not None, c.subscription_id is not None, \
        ledger.balance(c.id)


def test_subscription_events_in_and_out_of_order_end_in_the_same_state(
        pay_app, pay_api, make, stripe_server):
    client, secret, t0 = pay_app.test_client(), stripe_server.webhook_secret, int(time.time())
    _, in_data, in_order = subscription_events(pay_api, make, stripe_server, "sub-a", t0)
    _, out_data, shuffled = subscription_events(pay_api, make, stripe_server, "sub-b", t0)

    seen = []
    for event in in_order[:2]:
        send_stripe(client, event, secret)
        seen.append(state("sub-a"))
    for event in in_order[2:]:
        send_stripe(client, event, secret)
    for event in (shuffled[3], shuffled[1], shuffled[2], shuffled[0]):  # deleted first
        send_stripe(client, event, secret)

    assert seen == [("active", True, True, 0), ("active", True, True, 1000)]
    assert state("sub-a") == state("sub-b") == ("cancelled", True, True, 1000)
    assert len(grants_of(in_data["payment_id"])) == len(grants_of(out_data["payment_id"])) == 1
    [entry] = grants_of(in_data["payment_id"])
    assert entry.idempotency_key.startswith("invoice:stripe:in_")
    assert payment(in_data["payment_id"]).provider_payment_id.startswith("pi_")


def test_past_due_then_recovered_applies_the_newest_state_whatever_the_order(
        pay_app, pay_api, make, stripe_server):
    client, secret, t0 = pay_app.test_client(), stripe_server.webhook_secret, int(time.time())
    _, _, events = subscription_events(pay_api, make, stripe_server, "sub-c", t0)
    sub = events[2]["data"]["object"]
    recovered = signing.stripe_event("customer.subscription.updated", {**sub, "status": "active"},
                                     created=t0 + 30, previous_attributes={"status": "past_due"})

    for event in (events[0], events[1], recovered, events[2]):  # the older past_due comes last
        send_stripe(client, event, secret)

    assert state("sub-c")[0] == "active"
    assert event_rows()[-1][2] == "older than the subscription state applied"


def test_renewal_invoice_grants_the_next_period_once(pay_app, pay_api, make, stripe_server):
    client, secret, t0 = pay_app.test_client(), stripe_server.webhook_secret, int(time.time())
    _, data, events = subscription_events(pay_api, make, stripe_server, "sub-d", t0)
    for event in events[:2]:
        send_stripe(client, event, secret)
    sub = stripe_server.subscriptions[events[0]["data"]["object"]["subscription"]]
    renewal = signing.invoice_object(subscription=sub, billing_reason="subscription_cycle")

    for _ in range(2):  # Stripe may deliver twice under two event ids
        send_stripe(client, signing.stripe_event("invoice.paid", renewal, created=t0 + 60), secret)

    assert state("sub-d")[3] == 2000
    keys = sorted(db.session.scalars(select(LedgerEntry.idempotency_key).where(
        LedgerEntry.type == "grant")))
    assert keys == sorted([f"invoice:stripe:{events[1]['data']['object']['id']}",
                           f"invoice:stripe:{renewal['id']}"])
    assert reconcile.run().ok


# --- Razorpay ------------------------------------------------------------------------------------

def test_razorpay_refund_before_capture_ends_like_in_order(pay_app, pay_api, make, razorpay_server):
    client, secret = pay_app.test_client(), razorpay_server.webhook_secret
    finals = []
    for external_id, early in (("rz-in", False), ("rz-out", True)):
        make.customer(external_id=external_id)
        pack = make.package(credits=100, price_minor=10000, currency="INR")
        order = buy(pay_api, external_id, "razorpay", package_id=pack.id)
        pay_id = razorpay_server.pay_order(order["order_id"])
        captured = signing.razorpay_payment_captured(dict(razorpay_server.payments[pay_id]))
        rf = rzp.create_refund(payment_id=pay_id, amount_minor=4000, idempotency_key=f"rf-{external_id}")
        processed = signing.razorpay_refund_processed(rf, razorpay_server.payments[pay_id])
        sig = razorpay_server.payment_signature(order["order_id"], pay_id)
        steps = [lambda e=processed: send_razorpay(client, e, secret),
                 lambda e=captured: send_razorpay(client, e, secret),
                 lambda o=order, p=pay_id, s=sig: verify(pay_api, o["order_id"], p, s)]
        if not early:
            steps = steps[1:] + steps[:1]
        for step in steps:
            assert step()[0] == 200
        p = payment(order["payment_id"])
        finals.append((balance(external_id), p.status, p.refunded_minor,
                       len(grants_of(p.id)), db.session.scalar(select(Refund.credits).where(
                           Refund.payment_id == p.id))))

    assert finals[0] == finals[1] == (60, "partially_refunded", 4000, 1, 40)
    assert reconcile.run().ok


def test_razorpay_event_id_dedup_and_order_paid(pay_app, pay_api, make, razorpay_server):
    client, secret = pay_app.test_client(), razorpay_server.webhook_secret
    make.customer(external_id="rz-2")
    pack = make.package(credits=50, price_minor=500, currency="INR")
    order = buy(pay_api, "rz-2", "razorpay", package_id=pack.id)
    pay_id = razorpay_server.pay_order(order["order_id"])
    paid = signing.razorpay_order_paid(razorpay_server.orders[order["order_id"]],
                                       razorpay_server.payments[pay_id])

    first = send_razorpay(client, paid, secret, event_id="evt_rz_1")
    redelivery = send_razorpay(client, paid, secret, event_id="evt_rz_1")
    captured = send_razorpay(client, signing.razorpay_payment_captured(
        razorpay_server.payments[pay_id]), secret, event_id="evt_rz_2")

    assert first[1]["data"] == {"received": True, "event_id": "evt_rz_1", "type": "order.paid",
                                "status": "processed", "duplicate": False}
    assert redelivery[1]["data"]["duplicate"] is True
    assert captured[1]["data"]["status"] == "processed"
    assert balance("rz-2") == 50 and len(grants_of(order["payment_id"])) == 1
    stored = db.session.scalar(select(WebhookEvent).where(WebhookEvent.event_id == "evt_rz_1"))
    assert json.loads(stored.payload)["event"] == "order.paid"


def test_a_signed_but_malformed_event_is_stored_failed_and_answered_200(pay_app, stripe_server):
    event = signing.stripe_event("invoice.paid", {"object": "invoice", "amount_paid": 100})
    status, body = send_stripe(pay_app.test_client(), event, stripe_server.webhook_secret)
    assert status == 200 and body["data"]["status"] == "failed"
    [(kind, state, error)] = event_rows()
    assert (kind, state) == ("invoice.paid", "failed") and error.startswith("malformed invoice.paid")
    assert counts()["LedgerEntry"] == 0
