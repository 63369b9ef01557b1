"""Auto top-up: the card saved at Checkout, the setting (API and page), off-session charges.

Stripe is the double in tests/fakes/stripe_server.py through the real SDK; its test payment
methods choose the outcome (pm_card_visa pays, pm_card_chargeDeclined is declined,
pm_card_authenticationRequired needs the customer). Attempts are what the trigger under the
account lock inserts (services/ledger/crossings.py); some tests insert them directly.
"""
from __future__ import annotations

import threading

import pytest
from sqlalchemy import select, update

from models import AuditLog, AutoTopup, AutoTopupAttempt, OutboxEvent, Payment, db
from services.ledger import posting as ledger
from services.ledger import reconcile
from services.payments import autotopup_charge
from tests.fakes import signing
from tests.helpers import ApiClient, assert_error
from tests.payments.helpers import buy, send_stripe

PACK_CREDITS, PACK_PRICE = 500, 1500


def saved_card(pay_app, pay_api, make, stripe_server, *, external_id="at-1",
               pm="pm_card_visa", credits=PACK_CREDITS):
    """A customer who bought once through Stripe Checkout with `pm`, the card saved."""
    c = make.customer(external_id=external_id)
    pack = make.package(credits=credits, price_minor=PACK_PRICE, currency="USD")
    data = buy(pay_api, external_id, "stripe", package_id=pack.id)
    stripe_server.complete_session(data["session_id"], payment_method=pm)
    session = stripe_server.sessions[data["session_id"]]
    status, _ = send_stripe(pay_app.test_client(), signing.checkout_session_completed(session),
                            stripe_server.webhook_secret)
    assert status == 200
    return c, pack


def writer(app, make) -> ApiClient:
    _, plain = make.api_key(scopes=["customers:write", "customers:read"])
    return ApiClient(app, plain)


def enable(app, make, external_id, pack, *, threshold=100, monthly_limit=5, enabled=True):
    status, body, _ = writer(app, make).put(
        f"/api/v1/customers/{external_id}/auto-topup",
        {"enabled": enabled, "threshold": threshold, "package_id": pack.id,
         "monthly_limit": monthly_limit})
    assert status == 200, body
    return body["data"]


def attempt(c, pack, n: int) -> int:
    """What the trigger inserts for the n-th crossing."""
    a = AutoTopupAttempt(customer_id=c.id, package_id=pack.id, key=f"autotopup:{c.id}:x{n}",
                         status="pending", balance_at_trigger=10)
    db.session.add(a)
    db.session.commit()
    return a.id


def attempt_row(attempt_id: int) -> AutoTopupAttempt:
    db.session.rollback()
    return db.session.get(AutoTopupAttempt, attempt_id)


def setting(c) -> AutoTopup:
    db.session.rollback()
    return db.session.scalar(select(AutoTopup).where(AutoTopup.customer_id == c.id))


def events(type_: str) -> list[dict]:
    db.session.rollback()
    return [e.data for e in db.session.scalars(
        select(OutboxEvent).where(OutboxEvent.type == type_).order_by(OutboxEvent.id))]


def off_session_calls(stripe_server):
    return stripe_server.requests_to("POST", "/v1/payment_intents")


def balance(c) -> int:
    db.session.rollback()
    return ledger.balance(c.id)


# --- the saved card and the setting ------------------------------------------------------------

def test_checkout_saves_the_card_and_enabling_needs_it(pay_app, pay_api, make, stripe_server):
    make.customer(external_id="nocard")
    pack = make.package(credits=100, price_minor=500)
    status, body, _ = writer(pay_app, make).put(
        "/api/v1/customers/nocard/auto-topup",
        {"enabled": True, "threshold": 50, "package_id": pack.id, "monthly_limit": 2})
    assert_error(status, body, "AUTO_TOPUP_NO_PAYMENT_METHOD", 409)

    c, pack = saved_card(pay_app, pay_api, make, stripe_server)

    row = setting(c)
    assert (row.enabled, row.payment_method_id, row.card_brand, row.card_last4) == \
        (False, "pm_card_visa", "visa", "4242")
    assert row.stripe_customer_id in stripe_server.customers
    data = enable(pay_app, make, "at-1", pack, threshold=200, monthly_limit=3)
    assert data == {"external_id": "at-1", "enabled": True, "threshold": 200,
                    "package_id": pack.id, "monthly_limit": 3, "this_month": 0, "failures": 0,
                    "paused": False, "paused_at": None,
                    "payment_method": {"brand": "visa", "last4": "4242"}}
    _, got, _ = writer(pay_app, make).get("/api/v1/customers/at-1/auto-topup")
    assert got["data"] == data


def test_razorpay_customers_are_refused_with_a_clear_error(pay_app, make):
    c = make.customer(external_id="rzp-1")
    make.payment(c, provider="razorpay", currency="INR")
    pack = make.package()
    status, body, _ = writer(pay_app, make).put(
        "/api/v1/customers/rzp-1/auto-topup",
        {"enabled": True, "threshold": 10, "package_id": pack.id, "monthly_limit": 1})
    assert_error(status, body, "AUTO_TOPUP_STRIPE_ONLY", 422)
    assert "auto top-up is supported with Stripe only" in body["error"]
    assert setting(c) is None
    # Disabled settings may still be stored (nothing will charge).
    status, body, _ = writer(pay_app, make).put(
        "/api/v1/customers/rzp-1/auto-topup",
        {"enabled": False, "threshold": 10, "package_id": pack.id, "monthly_limit": 1})
    assert status == 200 and body["data"]["enabled"] is False


def test_api_validation_and_scopes(pay_app, pay_api, make, stripe_server, api_as):
    c, pack = saved_card(pay_app, pay_api, make, stripe_server)
    archived = make.package(price_minor=900)
    archived.archived_at = archived.created_at
    free = make.package(price_minor=0)
    db.session.commit()
    api = writer(pay_app, make)
    url = "/api/v1/customers/at-1/auto-topup"
    good = {"enabled": True, "threshold": 100, "package_id": pack.id, "monthly_limit": 2}
    for change in ({"threshold": -1}, {"monthly_limit": 0}, {"monthly_limit": 101},
                   {"threshold": "5"}, {"enabled": "yes"}, {"package_id": 999999},
                   {"package_id": archived.id}, {"package_id": free.id}, {"extra": 1}):
        status, body, _ = api.put(url, {**good, **change})
        assert_error(status, body, "VALIDATION_ERROR", 422)
    no_threshold = dict(good)
    del no_threshold["threshold"]
    assert_error(*api.put(url, no_threshold)[:2], "VALIDATION_ERROR", 422)
    assert setting(c).enabled is False  # nothing stored by a refused call

    reader = api_as("customers:read")
    assert_error(*reader.put(url, good)[:2], "AUTH_FORBIDDEN", 403)
    assert reader.get(url)[0] == 200
    assert_error(*api_as("debits:write").get(url)[:2], "AUTH_FORBIDDEN", 403)
    assert_error(*api.put("/api/v1/customers/nobody/auto-topup", good)[:2],
                 "CUSTOMER_NOT_FOUND", 404)
    assert api.put(url, good)[0] == 200


# --- charges ---------------------------------------------------------------------------------------

def test_success_charges_off_session_and_grants_once_then_the_webhook_is_a_no_op(
        pay_app, pay_api, make, stripe_server):
    c, pack = saved_card(pay_app, pay_api, make, stripe_server)
    enable(pay_app, make, "at-1", pack)
    before = balance(c)
    aid = attempt(c, pack, 1)

    out = autotopup_charge.process_due()

    assert (out.claimed, out.succeeded) == (1, 1)
    [call] = off_session_calls(stripe_server)
    a = attempt_row(aid)
    assert call.header("Idempotency-Key") == a.key
    assert (call.body["off_session"], call.body["confirm"], call.body["amount"]) == \
        ("true", "true", str(PACK_PRICE))
    assert call.body["customer"] == setting(c).stripe_customer_id
    assert call.body["payment_method"] == "pm_card_visa"
    assert call.body["metadata"]["creditdesk_auto_topup_attempt_id"] == str(aid)
    assert a.status == "succeeded" and a.provider_ref == call_pi(stripe_server)
    p = db.session.get(Payment, a.payment_id)
    assert (p.status, p.provider_payment_id, p.credits) == ("paid", a.provider_ref, PACK_CREDITS)
    assert balance(c) == before + PACK_CREDITS

    pi = stripe_server.payment_intents[a.provider_ref]
    status, body = send_stripe(pay_app.test_client(),
                               signing.stripe_event("payment_intent.succeeded", pi),
                               stripe_server.webhook_secret)
    assert status == 200 and body["data"]["status"] == "processed"
    assert balance(c) == before + PACK_CREDITS
    [ev] = events("auto_topup.succeeded")
    assert (ev["external_id"], ev["attempt_id"], ev["credits"]) == ("at-1", aid, PACK_CREDITS)
    assert setting(c).failures == 0
    assert reconcile.run().ok


def call_pi(stripe_server) -> str:
    [pi] = [k for k, v in stripe_server.payment_intents.items() if v.get("off_session")]
    return pi


def test_webhook_first_then_the_charge_answer_grants_once(pay_app, pay_api, make, stripe_server):
    """Stripe charged, its webhook lands, and only then does our charge call answer (a crash
    after charging is the same: the stale attempt is retried with the same key)."""
    c, pack = saved_card(pay_app, pay_api, make, stripe_server)
    enable(pay_app, make, "at-1", pack)
    before = balance(c)
    aid = attempt(c, pack, 1)
    result = autotopup_charge.Result()
    charge = autotopup_charge._claim_next(result)
    from services.providers import stripe as stp
    answer = stp.charge_off_session(  # the charge whose answer is lost (crash)
        amount_minor=charge.amount_minor, currency=charge.currency,
        customer=charge.stripe_customer, payment_method=charge.payment_method,
        idempotency_key=charge.key, metadata=charge.metadata)
    pi = stripe_server.payment_intents[answer["payment_intent"]]
    status, body = send_stripe(pay_app.test_client(),
                               signing.stripe_event("payment_intent.succeeded", pi),
                               stripe_server.webhook_secret)
    assert status == 200 and body["data"]["status"] == "processed"
    assert balance(c) == before + PACK_CREDITS
    assert attempt_row(aid).status == "succeeded"

    # Now the charge call answers (the same key again: Stripe replays the same PaymentIntent).
    autotopup_charge._charge(charge, result, autotopup_charge.JOB_ACTOR)
    assert autotopup_charge.process_due().claimed == 0  # settled: nothing left to retry
    calls = off_session_calls(stripe_server)
    assert len(calls) == 2 and {r.header("Idempotency-Key") for r in calls} == {charge.key}
    assert len([p for p in stripe_server.payment_intents.values() if p.get("off_session")]) == 1
    assert balance(c) == before + PACK_CREDITS
    assert len(events("auto_topup.succeeded")) == 1
    assert reconcile.run().ok


def test_crash_after_charging_is_retried_with_the_same_key_and_charges_once(
        pay_app, pay_api, make, stripe_server):
    c, pack = saved_card(pay_app, pay_api, make, stripe_server)
    enable(pay_app, make, "at-1", pack)
    before = balance(c)
    aid = attempt(c, pack, 1)
    stripe_server.delay_next(1, 3.0, path="/v1/payment_intents")  # charged, answer lost
    pay_app.config["PAYMENT_PROVIDER_TIMEOUT"] = 1

    out = autotopup_charge.process_due()
    assert out.waiting == 1 and attempt_row(aid).status == "processing"
    assert balance(c) == before
    out = autotopup_charge.process_due()  # not stale yet: left alone
    assert out.claimed == 0

    db.session.execute(update(AutoTopupAttempt).where(AutoTopupAttempt.id == aid).values(
        updated_at=attempt_row(aid).updated_at - autotopup_charge.STALE_AFTER))
    db.session.commit()
    out = autotopup_charge.process_due()
    assert out.succeeded == 1
    assert {r.header("Idempotency-Key") for r in off_session_calls(stripe_server)} == \
        {attempt_row(aid).key}
    assert balance(c) == before + PACK_CREDITS


def test_declines_count_fire_failed_and_pause_after_three_then_the_api_resumes(
        pay_app, pay_api, make, stripe_server):
    c, pack = saved_card(pay_app, pay_api, make, stripe_server, pm="pm_card_chargeDeclined")
    enable(pay_app, make, "at-1", pack, monthly_limit=10)
    before = balance(c)
    ids = []
    for n in range(3):
        ids.append(attempt(c, pack, n))
        out = autotopup_charge.process_due()
        assert out.failed == 1
        assert setting(c).failures == n + 1
    assert setting(c).paused_at is not None
    assert [attempt_row(i).status for i in ids] == ["failed"] * 3
    failed = events("auto_topup.failed")
    assert [(e["reason"], e["failures"], e["paused"]) for e in failed] == \
        [("generic_decline", 1, False), ("generic_decline", 2, False), ("generic_decline", 3, True)]
    assert failed[0]["external_id"] == "at-1" and failed[0]["attempt_id"] == ids[0]
    assert balance(c) == before
    assert {db.session.get(Payment, attempt_row(i).payment_id).status for i in ids} == {"failed"}

    paused = attempt(c, pack, 9)  # paused: refused without calling Stripe
    autotopup_charge.process_due()
    assert attempt_row(paused).status == "failed" and len(off_session_calls(stripe_server)) == 3

    data = enable(pay_app, make, "at-1", pack, monthly_limit=10)
    assert (data["paused"], data["failures"]) == (False, 0)


def test_requires_action_is_reported_and_not_charged(pay_app, pay_api, make, stripe_server):
    c, pack = saved_card(pay_app, pay_api, make, stripe_server,
                         pm="pm_card_authenticationRequired")
    enable(pay_app, make, "at-1", pack)
    before = balance(c)
    aid = attempt(c, pack, 1)

    out = autotopup_charge.process_due()

    assert out.requires_action == 1
    a = attempt_row(aid)
    assert a.status == "requires_action" and a.provider_ref
    [ev] = events("auto_topup.failed")
    assert (ev["reason"], ev["failures"]) == ("requires_action", 1)
    assert balance(c) == before and events("auto_topup.succeeded") == []


def test_monthly_limit_caps_the_charges(pay_app, pay_api, make, stripe_server):
    c, pack = saved_card(pay_app, pay_api, make, stripe_server)
    enable(pay_app, make, "at-1", pack, monthly_limit=2)
    before = balance(c)
    ids = [attempt(c, pack, n) for n in range(3)]

    autotopup_charge.process_due()

    assert [attempt_row(i).status for i in ids] == ["succeeded", "succeeded", "failed"]
    assert "monthly_limit" in attempt_row(ids[2]).error
    assert len(off_session_calls(stripe_server)) == 2
    assert balance(c) == before + 2 * PACK_CREDITS
    [ev] = events("auto_topup.failed")
    assert ev["reason"] == "monthly_limit"
    _, got, _ = writer(pay_app, make).get("/api/v1/customers/at-1/auto-topup")
    assert got["data"]["this_month"] == 2


def test_a_debit_crossing_the_threshold_tops_up(pay_app, pay_api, make, stripe_server):
    c, pack = saved_card(pay_app, pay_api, make, stripe_server)  # balance 500 after the purchase
    enable(pay_app, make, "at-1", pack, threshold=100)
    ledger.debit(customer_id=c.id, credits=350, feature="chat", key="d1")  # 150: above
    ledger.debit(customer_id=c.id, credits=100, feature="chat", key="d2")  # 50: crossed
    db.session.rollback()
    [a] = db.session.scalars(select(AutoTopupAttempt)).all()
    assert a.status == "pending" and a.balance_at_trigger == 50

    assert autotopup_charge.process_due().succeeded == 1
    assert balance(c) == 50 + PACK_CREDITS


def test_the_job_runs_by_hand(pay_app, pay_api, make, stripe_server):
    from jobs import run
    c, pack = saved_card(pay_app, pay_api, make, stripe_server)
    enable(pay_app, make, "at-1", pack)
    attempt(c, pack, 1)
    r = run("process_auto_topups", trigger="cli")
    assert (r.status, r.users_count, r.processed_count) == ("succeeded", 1, 1)
    assert run("process_auto_topups", period="2026-01-01T00:00:00", trigger="schedule") is None


# --- the customer page ---------------------------------------------------------------------------

def test_page_card_is_admin_only_and_its_forms_need_csrf(pay_app, pay_api, make, stripe_server,
                                                         login):
    c, pack = saved_card(pay_app, pay_api, make, stripe_server)
    admin, support = login("admin"), login("support")
    page = admin.get(f"/customers/{c.id}").get_data(as_text=True)
    assert "Auto top-up" in page and "4242" in page
    assert "Auto top-up" not in support.get(f"/customers/{c.id}").get_data(as_text=True)
    form = {"enabled": "y", "threshold": "250", "package_id": str(pack.id), "monthly_limit": "4"}
    assert support.post(f"/customers/{c.id}/auto-topup", form).status_code == 403
    assert admin.post(f"/customers/{c.id}/auto-topup", form, csrf=False).status_code == 400
    assert setting(c).enabled is False

    resp = admin.htmx(f"/customers/{c.id}/auto-topup", "POST", data=form)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    html = resp.get_data(as_text=True)
    assert "<html" not in html and "Auto top-up saved." in html
    row = setting(c)
    assert (row.enabled, row.threshold, row.monthly_limit) == (True, 250, 4)
    audit = db.session.scalar(select(AuditLog).where(AuditLog.action == "auto_topup.update"))
    assert audit.staff_id == admin.staff.id and audit.after["threshold"] == 250

    bad = admin.htmx(f"/customers/{c.id}/auto-topup", "POST", data={**form, "monthly_limit": "0"})
    assert bad.status_code == 422


def test_page_resume_after_a_pause(pay_app, pay_api, make, stripe_server, login):
    c, pack = saved_card(pay_app, pay_api, make, stripe_server)
    enable(pay_app, make, "at-1", pack)
    db.session.execute(update(AutoTopup).where(AutoTopup.customer_id == c.id).values(
        failures=3, paused_at=db.func.now()))
    db.session.commit()
    admin = login("admin")
    assert "Resume auto top-up" in admin.get(f"/customers/{c.id}").get_data(as_text=True)
    assert login("support").post(f"/customers/{c.id}/auto-topup/resume", {}).status_code == 403
    resp = admin.post(f"/customers/{c.id}/auto-topup/resume", {})
    assert resp.status_code == 302
    row = setting(c)
    assert (row.paused_at, row.failures) == (None, 0)
    assert db.session.scalar(select(AuditLog).where(AuditLog.action == "auto_topup.resume"))


# --- under concurrency (PostgreSQL) ------------------------------------------------------------

def _together(n: int, app, fn) -> list[str]:
    """Run fn(i) in n threads released at once, each with its own app context; the errors."""
    errors: list[str] = []
    start = threading.Barrier(n)

    def call(i: int) -> None:
        with app.app_context():
            start.wait()
            try:
                fn(i)
            except Exception as err:  # collected; the test fails on any
                errors.append(repr(err))
            finally:
                db.session.remove()

    threads = [threading.Thread(target=call, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


@pytest.mark.pg
def test_50_concurrent_debits_crossing_the_threshold_charge_once(pg_app, factory, stripe_server):
    pg_app.config.update(stripe_server.app_config(), PAYMENT_PROVIDER_TIMEOUT=5)
    _, plain = factory.api_key(scopes=["payments:write"])
    c, pack = saved_card(pg_app, ApiClient(pg_app, plain), factory, stripe_server)
    factory.grant(c, credits=1000)  # 1,500 credits
    enable(pg_app, factory, "at-1", pack, threshold=1000, monthly_limit=5)
    _, debit_key = factory.api_key(scopes=["debits:write", "grants:write"])
    cid = c.id

    def debit(i: int) -> None:
        if i % 2:  # half through the API's hot path, half through the general posting path
            status, body, _ = ApiClient(pg_app, debit_key).post(
                "/api/v1/customers/at-1/debits", {"feature": "chat", "credits": 20},
                headers={"Idempotency-Key": f"storm-{i}"})
            assert status == 201, body
        else:
            ledger.debit(customer_id=cid, credits=20, feature="chat", key=f"storm-{i}")

    assert _together(50, pg_app, debit) == []
    db.session.rollback()
    [a] = db.session.scalars(select(AutoTopupAttempt)).all()  # one crossing, one attempt
    assert a.status == "pending" and a.balance_at_trigger < 1000
    assert balance(c) == 500

    assert _together(4, pg_app, lambda i: autotopup_charge.process_due()) == []
    assert len(off_session_calls(stripe_server)) == 1
    pi = stripe_server.payment_intents[attempt_row(a.id).provider_ref]
    body, headers = signing.stripe_webhook_request(
        signing.stripe_event("payment_intent.succeeded", pi), stripe_server.webhook_secret)

    def deliver(i: int) -> None:
        resp = pg_app.test_client().post("/api/webhooks/stripe", data=body, headers=headers)
        assert resp.status_code == 200, resp.get_data(as_text=True)

    assert _together(10, pg_app, deliver) == []
    assert attempt_row(a.id).status == "succeeded"
    assert balance(c) == 500 + PACK_CREDITS
    assert len(events("auto_topup.succeeded")) == 1
    assert reconcile.run().ok


def test_payment_failed_webhook_counts_a_decline_once_in_either_order(pay_app, pay_api, make,
                                                                       stripe_server):
    c, pack = saved_card(pay_app, pay_api, make, stripe_server, pm="pm_card_insufficientFunds")
    enable(pay_app, make, "at-1", pack)
    client = pay_app.test_client()
    # Charge answer first, then the webhook: the webhook changes nothing.
    first = attempt(c, pack, 1)
    autotopup_charge.process_due()
    pi = stripe_server.payment_intents[attempt_row(first).provider_ref]
    status, body = send_stripe(client, signing.stripe_event("payment_intent.payment_failed", pi),
                               stripe_server.webhook_secret)
    assert status == 200 and body["data"]["status"] == "processed"
    assert setting(c).failures == 1 and len(events("auto_topup.failed")) == 1

    # Webhook first (the charge answer was lost), then the retried charge call: one decline.
    second = attempt(c, pack, 2)
    result = autotopup_charge.Result()
    charge = autotopup_charge._claim_next(result)
    from services.providers import stripe as stp
    lost = stp.charge_off_session(amount_minor=charge.amount_minor, currency=charge.currency,
                                  customer=charge.stripe_customer,
                                  payment_method=charge.payment_method,
                                  idempotency_key=charge.key, metadata=charge.metadata)
    pi = stripe_server.payment_intents[lost["payment_intent"]]
    send_stripe(client, signing.stripe_event("payment_intent.payment_failed", pi),
                stripe_server.webhook_secret)
    assert attempt_row(second).status == "failed" and setting(c).failures == 2
    autotopup_charge._charge(charge, result, autotopup_charge.JOB_ACTOR)
    assert setting(c).failures == 2
    assert [e["reason"] for e in events("auto_topup.failed")] == ["insufficient_funds"] * 2
