"""Refund workflow through the real Stripe and Razorpay SDKs against the fake providers:
request -> approve (maker-checker) -> process; provider failures and retries; the provider's
refund webhook arriving before and after our own settlement; one claw-back whoever is first."""
from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from models import AuditLog, Payment, Refund, db, utcnow
from services.core.errors import Conflict, Forbidden, PaymentProviderError, RefundNotEligible
from services.ledger import reconcile
from services.refunds import eligibility
from services.refunds import requests as refunds
from tests.refunds.helpers import (
    balance_of,
    clawbacks,
    fake_of,
    fresh,
    idempotency_header,
    purchase,
    refund_requests,
    refund_rows,
    refund_webhook,
    spend,
)

PROVIDERS = ["stripe", "razorpay"]


@pytest.fixture
def people(make):
    return {"support": make.staff(role="support"), "finance": make.staff(role="finance"),
            "admin": make.staff(role="admin")}


def approved(p: Payment, people, *, credits: int | None = None) -> Refund:
    r = refunds.request(payment_id=p.id, credits=credits, reason="customer asked",
                        staff=people["support"])
    return refunds.approve(refund_id=r.id, staff=people["finance"])


@pytest.mark.parametrize("provider", PROVIDERS)
def test_request_approve_process_refunds_money_once_and_claws_back_once(
        provider, pay_app, pay_api, make, stripe_server, razorpay_server, people):
    p = purchase(provider, pay_app, pay_api, make, stripe_server, razorpay_server)
    fake = fake_of(provider, stripe_server, razorpay_server)
    spend(p.customer_id, 400, "spend-400")

    r = refunds.request(payment_id=p.id, reason="customer asked", staff=people["support"])
    assert (r.status, r.credits) == ("requested", 600)
    assert r.amount_minor == p.amount_minor * 600 // 1000  # credits x cost basis, rounded down
    assert r.idempotency_key.startswith("creditdesk-refund-")
    r = refunds.approve(refund_id=r.id, staff=people["finance"])
    assert r.status == "approved"
    assert refund_requests(provider, fake) == []  # approval alone moves nothing

    done = refunds.process(refund_id=r.id, staff=people["finance"])

    assert done.status == "processed" and done.provider_refund_id
    [call] = refund_requests(provider, fake)
    assert idempotency_header(provider, call) == r.idempotency_key
    assert call.body["amount"] in (r.amount_minor, str(r.amount_minor))
    [claw] = clawbacks(p.id)
    assert (claw.amount, claw.idempotency_key) == (-600, f"refund:{r.id}")
    assert balance_of(p.customer_id) == 0
    pay = fresh(Payment, p.id)
    assert (pay.status, pay.refunded_minor) == ("partially_refunded", r.amount_minor)
    row = fresh(Refund, r.id)
    assert (row.credits, row.clawback_entry_id, row.attempts) == (600, claw.id, 1)
    actions = db.session.scalars(select(AuditLog.action).where(
        AuditLog.target_type == "refund", AuditLog.target_id == str(r.id)).order_by(AuditLog.id)).all()
    assert actions == ["refund.requested", "refund.approved", "refund.processing", "refund.processed"]
    assert reconcile.run().ok


@pytest.mark.parametrize("provider", PROVIDERS)
def test_provider_failure_leaves_ledger_untouched_and_retry_refunds_once(
        provider, pay_app, pay_api, make, stripe_server, razorpay_server, people):
    p = purchase(provider, pay_app, pay_api, make, stripe_server, razorpay_server)
    fake = fake_of(provider, stripe_server, razorpay_server)
    r = approved(p, people, credits=300)
    fake.fail_next(1, 500)

    with pytest.raises(PaymentProviderError):
        refunds.process(refund_id=r.id, staff=people["admin"])

    failed = fresh(Refund, r.id)
    assert failed.status == "failed" and failed.error and failed.attempts == 1
    assert clawbacks(p.id) == [] and balance_of(p.customer_id) == 1000
    assert fresh(Payment, p.id).refunded_minor == 0
    assert eligibility.for_payment_id(p.id).refundable_credits == 700  # the 300 stay promised
    fake.fail_next(1, drop=True)  # the connection dies: still nothing moves
    with pytest.raises(PaymentProviderError):
        refunds.process(refund_id=r.id, staff=people["admin"])
    assert clawbacks(p.id) == []

    done = refunds.process(refund_id=r.id, staff=people["admin"])

    assert done.status == "processed" and done.attempts == 3
    calls = refund_requests(provider, fake)
    assert len(calls) == 3 and {idempotency_header(provider, c) for c in calls} == {r.idempotency_key}
    assert len(fake.refunds) == 1  # one money refund at the provider
    assert [c.amount for c in clawbacks(p.id)] == [-300]
    assert balance_of(p.customer_id) == 700
    assert reconcile.run().ok


@pytest.mark.parametrize("provider", PROVIDERS)
def test_lost_answer_retry_gets_the_refund_the_provider_already_made(
        provider, pay_app, pay_api, make, stripe_server, razorpay_server, people):
    """The first attempt reached the provider but its answer never came back."""
    p = purchase(provider, pay_app, pay_api, make, stripe_server, razorpay_server)
    fake = fake_of(provider, stripe_server, razorpay_server)
    r = approved(p, people, credits=500)
    refunds._refund_at_provider(provider=p.provider, payment_ref=p.provider_payment_id,
                                amount=r.amount_minor, key=r.idempotency_key, refund_id=r.id,
                                payment_id=p.id, customer_id=p.customer_id)

    done = refunds.process(refund_id=r.id, staff=people["finance"])

    assert done.status == "processed"
    assert len(fake.refunds) == 1 and done.provider_refund_id in fake.refunds
    assert [c.amount for c in clawbacks(p.id)] == [-500]
    assert reconcile.run().ok


@pytest.mark.parametrize("provider", PROVIDERS)
def test_webhook_after_our_settlement_changes_nothing(
        provider, pay_app, pay_api, make, stripe_server, razorpay_server, people):
    p = purchase(provider, pay_app, pay_api, make, stripe_server, razorpay_server)
    fake = fake_of(provider, stripe_server, razorpay_server)
    r = refunds.process(refund_id=approved(p, people, credits=250).id, staff=people["finance"])

    for _ in range(2):  # delivered twice, as providers do
        status, body = refund_webhook(provider, pay_app, fake, fake.refunds[r.provider_refund_id])
        assert status == 200 and body["data"]["status"] == "processed", body

    assert [c.amount for c in clawbacks(p.id)] == [-250]
    assert [(x.id, x.status, x.amount_minor) for x in refund_rows(p.id)] == \
        [(r.id, "processed", r.amount_minor)]
    assert fresh(Payment, p.id).refunded_minor == r.amount_minor
    assert balance_of(p.customer_id) == 750
    assert reconcile.run().ok


@pytest.mark.parametrize("provider", PROVIDERS)
def test_webhook_before_our_settlement_claws_back_once(
        provider, pay_app, pay_api, make, stripe_server, razorpay_server, people):
    """The provider's event reaches us while our own call is still waiting for its answer."""
    p = purchase(provider, pay_app, pay_api, make, stripe_server, razorpay_server)
    fake = fake_of(provider, stripe_server, razorpay_server)
    r = approved(p, people, credits=250)
    answers = []
    original = fake._create_refund

    def create_then_notify(*args):
        reply = original(*args)
        if reply.status == 200:  # the event goes out before the API answer does
            before = 0 if provider == "razorpay" else \
                fake.charges[reply.body["charge"]]["amount_refunded"] - reply.body["amount"]
            answers.append(refund_webhook(provider, pay_app, fake, reply.body,
                                          previously_refunded=before))
        return reply

    fake._create_refund = create_then_notify

    done = refunds.process(refund_id=r.id, staff=people["finance"])

    assert [(s, b["data"]["status"]) for s, b in answers] == [(200, "processed")]
    assert done.status == "processed" and done.provider_refund_id in fake.refunds
    [claw] = clawbacks(p.id)
    assert (claw.amount, claw.idempotency_key, claw.actor_type) == (-250, f"refund:{r.id}", "webhook")
    assert [x.id for x in refund_rows(p.id)] == [r.id]
    assert fresh(Payment, p.id).refunded_minor == r.amount_minor
    assert balance_of(p.customer_id) == 750
    via = db.session.scalars(select(AuditLog.after).where(
        AuditLog.action == "refund.processed", AuditLog.target_id == str(r.id))).all()
    assert [a["via"] for a in via] == ["provider webhook"]
    assert reconcile.run().ok


def test_webhook_confirms_a_refund_marked_failed_after_a_lost_answer(
        pay_app, pay_api, make, stripe_server, razorpay_server, people):
    p = purchase("stripe", pay_app, pay_api, make, stripe_server, razorpay_server)
    r = approved(p, people, credits=100)
    stripe_server.fail_next(1, 500)
    with pytest.raises(PaymentProviderError):
        refunds.process(refund_id=r.id, staff=people["finance"])
    # Meanwhile the refund was made at the provider with our key (say, by an earlier attempt).
    made = refunds._refund_at_provider(provider="stripe", payment_ref=p.provider_payment_id,
                                       amount=r.amount_minor, key=r.idempotency_key,
                                       refund_id=r.id, payment_id=p.id, customer_id=p.customer_id)

    refund_webhook("stripe", pay_app, stripe_server, made)
    assert fresh(Refund, r.id).status == "processed"
    with pytest.raises(Exception, match="processed"):
        refunds.process(refund_id=r.id, staff=people["finance"])

    assert [c.amount for c in clawbacks(p.id)] == [-100]
    assert len(stripe_server.refunds) == 1
    assert reconcile.run().ok


def test_maker_checker_and_roles(pay_app, pay_api, make, stripe_server, razorpay_server, people):
    p = purchase("stripe", pay_app, pay_api, make, stripe_server, razorpay_server)
    mine = refunds.request(payment_id=p.id, credits=100, reason="asked by phone",
                           staff=people["finance"])
    with pytest.raises(Forbidden, match="second person"):
        refunds.approve(refund_id=mine.id, staff=people["finance"])
    with pytest.raises(Forbidden):
        refunds.approve(refund_id=mine.id, staff=people["support"])
    assert fresh(Refund, mine.id).status == "requested"
    with pytest.raises(Exception, match="requested"):
        refunds.process(refund_id=mine.id, staff=people["admin"])  # not approved yet
    assert refunds.approve(refund_id=mine.id, staff=people["admin"]).approved_by_id == \
        people["admin"].id
    with pytest.raises(Forbidden):
        refunds.process(refund_id=mine.id, staff=people["support"])
    rejected = refunds.reject(refund_id=refunds.request(
        payment_id=p.id, credits=50, reason="duplicate", staff=people["support"]).id,
        staff=people["finance"], note="already handled")
    assert rejected.status == "rejected"
    assert stripe_server.requests_to("POST", "/v1/refunds") == []


def test_partial_refunds_and_refund_in_progress(pay_app, pay_api, make, stripe_server,
                                                razorpay_server, people):
    p = purchase("stripe", pay_app, pay_api, make, stripe_server, razorpay_server,
                 credits=1000, price_minor=2999)
    first = approved(p, people, credits=333)
    assert first.amount_minor == 2999 * 333 // 1000 == 998
    e = eligibility.for_payment_id(p.id)
    assert (e.eligible, e.refundable_credits) == (True, 667)
    with pytest.raises(RefundNotEligible):
        refunds.request(payment_id=p.id, credits=668, reason="too many", staff=people["support"])
    second = refunds.request(payment_id=p.id, reason="the rest", staff=people["support"])
    assert second.credits == 667
    assert eligibility.for_payment_id(p.id).reason == "a refund of this purchase is already in progress"
    with pytest.raises(RefundNotEligible, match="in progress"):
        refunds.request(payment_id=p.id, credits=1, reason="one more", staff=people["support"])

    refunds.process(refund_id=first.id, staff=people["finance"])
    refunds.approve(refund_id=second.id, staff=people["admin"])
    refunds.process(refund_id=second.id, staff=people["finance"])

    pay = fresh(Payment, p.id)
    assert [c.amount for c in clawbacks(p.id)] == [-333, -667]
    assert pay.refunded_minor == 998 + second.amount_minor <= pay.amount_minor
    assert balance_of(p.customer_id) == 0
    assert eligibility.for_payment_id(p.id).eligible is False
    assert reconcile.run().ok


def test_credits_spent_after_approval_stop_the_refund_before_the_provider(
        pay_app, pay_api, make, stripe_server, razorpay_server, people):
    p = purchase("stripe", pay_app, pay_api, make, stripe_server, razorpay_server)
    r = approved(p, people, credits=800)
    spend(p.customer_id, 500, "spend-after-approval")

    with pytest.raises(RefundNotEligible, match="still unused"):
        refunds.process(refund_id=r.id, staff=people["finance"])

    assert fresh(Refund, r.id).status == "approved"
    assert stripe_server.requests_to("POST", "/v1/refunds") == []
    assert clawbacks(p.id) == []


def test_a_double_submitted_request_files_once(pay_app, pay_api, make, stripe_server,
                                               razorpay_server, people):
    p = purchase("stripe", pay_app, pay_api, make, stripe_server, razorpay_server)
    a = refunds.request(payment_id=p.id, credits=10, reason="x" * 5, staff=people["support"], key="k1")
    b = refunds.request(payment_id=p.id, credits=10, reason="x" * 5, staff=people["support"], key="k1")
    assert a.id == b.id and len(refund_rows(p.id)) == 1


def test_two_approvers_processing_at_once_call_the_provider_once(
        pay_app, pay_api, make, stripe_server, razorpay_server, people):
    p = purchase("stripe", pay_app, pay_api, make, stripe_server, razorpay_server)
    r = approved(p, people, credits=400)
    deciders = [people["finance"], people["admin"]]
    for s in deciders:
        assert s.id and s.role and s.email  # loaded here, read by the threads
    outcomes, start = [], threading.Barrier(2)

    def go(staff):
        with pay_app.app_context():
            start.wait()
            try:
                outcomes.append(refunds.process(refund_id=r.id, staff=staff).status)
            except Conflict as err:
                outcomes.append(f"conflict: {err}")

    threads = [threading.Thread(target=go, args=(s,)) for s in deciders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sorted(o.split(":")[0] for o in outcomes) == ["conflict", "processed"], outcomes
    assert len(stripe_server.requests_to("POST", "/v1/refunds")) == 1
    assert [c.amount for c in clawbacks(p.id)] == [-400]
    assert reconcile.run().ok


def test_a_refund_stuck_processing_is_retried_after_five_minutes(
        pay_app, pay_api, make, stripe_server, razorpay_server, people):
    """The process died after the provider made the refund and before it settled."""
    p = purchase("stripe", pay_app, pay_api, make, stripe_server, razorpay_server)
    r = approved(p, people, credits=200)
    refunds._refund_at_provider(provider="stripe", payment_ref=p.provider_payment_id,
                                amount=r.amount_minor, key=r.idempotency_key, refund_id=r.id,
                                payment_id=p.id, customer_id=p.customer_id)
    row = fresh(Refund, r.id)
    row.status, row.updated_at = "processing", utcnow()
    db.session.commit()
    with pytest.raises(Conflict, match="being processed right now"):
        refunds.process(refund_id=r.id, staff=people["finance"])

    row = fresh(Refund, r.id)
    row.updated_at = utcnow() - timedelta(minutes=6)
    db.session.commit()
    done = refunds.process(refund_id=r.id, staff=people["finance"])

    assert done.status == "processed" and len(stripe_server.refunds) == 1
    assert [c.amount for c in clawbacks(p.id)] == [-200]
    assert reconcile.run().ok
