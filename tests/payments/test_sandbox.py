"""The sandbox (issue 13): play the customer of the local provider doubles.

The end-to-end tests run a real gunicorn (`live`) whose SDKs point at the doubles; the CLI runs
in this process against the same doubles and database and posts the providers' signed webhooks
to the server over HTTP, so the credits move only through the normal webhook path.
"""
from __future__ import annotations

import pytest
import requests
from sqlalchemy import func, select

from models import Account, AuditLog, LedgerEntry, Payment, Refund, WebhookEvent, db
from services.payments import purchases
from services.payments import sandbox as sandbox_service
from services.providers import sandbox as doubles
from tests.helpers import csrf_from


def balance(customer_id: int) -> int:
    db.session.rollback()  # the server wrote since: read afresh
    return db.session.scalar(select(Account.balance).where(Account.customer_id == customer_id))


def grants(payment_id: int) -> int:
    return db.session.scalar(select(func.count()).select_from(LedgerEntry).where(
        LedgerEntry.payment_id == payment_id, LedgerEntry.type == "grant"))


def events() -> list[tuple[str, str, str]]:
    db.session.rollback()
    return [(e.provider, e.type, e.status)
            for e in db.session.scalars(select(WebhookEvent).order_by(WebhookEvent.id))]


def sandbox_cli(app, *args: str):
    return app.test_cli_runner().invoke(args=["sandbox", *args])


def start_purchases(app, make, server):
    """A customer with one started Stripe Checkout (500 credits) and one Razorpay order (300)."""
    app.config.update(server.stripe.app_config(), **server.razorpay.app_config())
    c = make.customer(credits=0)
    usd = make.package(credits=500, price_minor=1000, currency="USD")
    inr = make.package(credits=300, price_minor=49900, currency="INR")
    checkout = purchases.start(external_id=c.external_id, provider="stripe", package_id=usd.id)
    order = purchases.start(external_id=c.external_id, provider="razorpay", package_id=inr.id)
    return c, checkout, order


# --- end to end through a running server -------------------------------------------------------

def test_cli_pays_and_refunds_through_the_webhooks_of_a_running_server(app, live, make):
    server = live(workers=2)
    c, checkout, order = start_purchases(app, make, server)
    db.session.commit()

    listed = sandbox_cli(app, "list")
    assert listed.exit_code == 0, listed.output
    assert checkout.session_id in listed.output and order.order_id in listed.output

    paid = sandbox_cli(app, "pay", checkout.session_id, "--url", server.url)
    assert paid.exit_code == 0, paid.output + server.log()[-2000:]
    assert "checkout.session.completed: HTTP 200, processed" in paid.output
    assert balance(c.id) == 500
    # the double shows the session paid to SDK reads, as Stripe would
    assert server.stripe.sessions[checkout.session_id]["payment_status"] == "paid"

    again = sandbox_cli(app, "pay", checkout.session_id, "--url", server.url)
    # our payment is paid: refused before any provider call
    assert again.exit_code == 1 and "is paid" in again.output
    assert balance(c.id) == 500 and grants(checkout.payment_id) == 1

    paid = sandbox_cli(app, "pay", order.order_id, "--url", server.url)
    assert paid.exit_code == 0, paid.output + server.log()[-2000:]
    assert "payment.captured: HTTP 200, processed" in paid.output
    assert "order.paid: HTTP 200, processed" in paid.output  # settles the same payment: no-op
    assert balance(c.id) == 800 and grants(order.payment_id) == 1
    assert server.razorpay.orders[order.order_id]["status"] == "paid"
    assert sandbox_cli(app, "pay", order.order_id, "--url", server.url).exit_code == 1
    assert balance(c.id) == 800

    refunded = sandbox_cli(app, "refund", str(checkout.payment_id), "--url", server.url)
    assert refunded.exit_code == 0, refunded.output + server.log()[-2000:]
    assert "charge.refunded: HTTP 200, processed" in refunded.output
    assert balance(c.id) == 300
    pi = db.session.get(Payment, checkout.payment_id).provider_payment_id
    assert server.stripe.charges[server.stripe.payment_intents[pi]["latest_charge"]]["refunded"]

    half = sandbox_cli(app, "refund", order.order_id, "--amount", "24950", "--url", server.url)
    assert half.exit_code == 0, half.output + server.log()[-2000:]
    assert "refund.processed: HTTP 200, processed" in half.output
    assert balance(c.id) == 150  # half the money back: half the unused credits clawed back

    db.session.rollback()
    assert {p.status for p in db.session.scalars(select(Payment))} == {"refunded",
                                                                      "partially_refunded"}
    assert db.session.scalar(select(func.count()).select_from(Refund)) == 2
    again = sandbox_cli(app, "refund", str(checkout.payment_id), "--url", server.url)
    assert again.exit_code == 1 and "refunded" in again.output
    assert balance(c.id) == 150
    audited = db.session.scalars(select(AuditLog).where(AuditLog.action.like("sandbox.%"))
                                 .order_by(AuditLog.id)).all()
    assert [(a.action, a.actor, a.target_id) for a in audited] == [
        ("sandbox.pay", "cli", str(checkout.payment_id)),
        ("sandbox.pay", "cli", str(order.payment_id)),
        ("sandbox.refund", "cli", str(checkout.payment_id)),
        ("sandbox.refund", "cli", str(order.payment_id)),
    ]
    assert ("stripe", "checkout.session.completed", "processed") in events()


def test_the_sandbox_page_pays_and_refunds_through_its_own_server(app, live, make):
    server = live(workers=2)
    c, checkout, _order = start_purchases(app, make, server)
    admin = make.staff(role="admin")
    db.session.commit()
    http = requests.Session()
    page = http.get(server.url + "/login", timeout=30)
    http.post(server.url + "/login", data={"email": admin.email, "password": admin.plain_password,
                                           "csrf_token": csrf_from(page.text)}, timeout=30)
    page = http.get(server.url + "/sandbox/", timeout=30)
    assert page.status_code == 200 and checkout.session_id in page.text
    assert 'href="/sandbox/"' in page.text  # in the nav
    token = csrf_from(page.text)
    hx = {"HX-Request": "true", "X-CSRFToken": token}

    resp = http.post(f"{server.url}/sandbox/payments/{checkout.payment_id}/pay", headers=hx,
                     timeout=60)
    assert resp.status_code == 200, resp.text[:500] + server.log()[-2000:]
    assert "<html" not in resp.text and "Paid, can be refunded" in resp.text
    assert "checkout.session.completed" in resp.headers["HX-Trigger"]
    assert balance(c.id) == 500

    again = http.post(f"{server.url}/sandbox/payments/{checkout.payment_id}/pay", headers=hx,
                      timeout=60)
    assert again.status_code == 409 and "is paid" in again.text
    assert balance(c.id) == 500

    no_csrf = http.post(f"{server.url}/sandbox/payments/{checkout.payment_id}/refund",
                        headers={"HX-Request": "true"}, timeout=60)
    assert no_csrf.status_code == 400 and balance(c.id) == 500

    resp = http.post(f"{server.url}/sandbox/payments/{checkout.payment_id}/refund", headers=hx,
                     timeout=60)
    assert resp.status_code == 200, resp.text[:500] + server.log()[-2000:]
    assert balance(c.id) == 0
    db.session.rollback()
    audited = db.session.scalars(select(AuditLog).where(AuditLog.action.like("sandbox.%"))
                                 .order_by(AuditLog.id)).all()
    assert [(a.action, a.staff_id) for a in audited] == [("sandbox.pay", admin.id),
                                                         ("sandbox.refund", admin.id)]


# --- only ever against local doubles -----------------------------------------------------------

@pytest.mark.parametrize(("config", "reason"), [
    ({"STRIPE_API_BASE": None}, "real Stripe API"),
    ({"STRIPE_API_BASE": "https://api.stripe.com"}, "real Stripe API"),
    ({"STRIPE_API_BASE": "https://api.stripe.com", "PAYMENT_SANDBOX": "1"}, "real Stripe API"),
    ({"STRIPE_SECRET_KEY": "sk_live_abc"}, "live keys"),
    ({"STRIPE_SECRET_KEY": None}, "not configured"),
    ({"STRIPE_API_BASE": "http://stripe-double.internal:12111"}, "PAYMENT_SANDBOX=1"),
    ({"PAYMENT_SANDBOX": "0"}, "switched off"),
])
def test_the_sandbox_refuses_anything_but_a_local_double(pay_app, config, reason):
    assert doubles.unavailable("stripe") is None and doubles.unavailable("razorpay") is None
    pay_app.config.update(config)
    assert reason in doubles.unavailable("stripe")
    with pytest.raises(doubles.SandboxUnavailable):
        doubles.stripe_signature(b"{}")


def test_an_explicit_flag_allows_a_double_on_another_host(pay_app):
    pay_app.config.update(STRIPE_API_BASE="http://stripe-double.internal:12111",
                          PAYMENT_SANDBOX="1")
    assert doubles.unavailable("stripe") is None


def test_cli_refuses_to_pay_when_the_provider_is_not_a_double(pay_app, pay_api, make,
                                                              stripe_server):
    c = make.customer()
    pack = make.package(credits=100, price_minor=500)
    checkout = purchases.start(external_id=c.external_id, provider="stripe", package_id=pack.id)
    pay_app.config.update(STRIPE_API_BASE=None)  # as in production: the real API
    seen = len(stripe_server.requests)
    out = sandbox_cli(pay_app, "pay", checkout.session_id, "--url", "http://127.0.0.1:9")
    assert out.exit_code == 1 and "not a local double" in out.output
    assert len(stripe_server.requests) == seen  # nothing was sent to any provider
    assert stripe_server.sessions[checkout.session_id]["status"] == "open"


def test_cli_reports_an_unreachable_webhook_url(pay_app, make, stripe_server):
    c = make.customer()
    pack = make.package(credits=100, price_minor=500)
    checkout = purchases.start(external_id=c.external_id, provider="stripe", package_id=pack.id)
    out = sandbox_cli(pay_app, "pay", checkout.session_id, "--url", "http://127.0.0.1:9")
    assert out.exit_code == 1 and "Could not deliver checkout.session.completed" in out.output
    assert balance(c.id) == 0


def test_unknown_reference_is_not_found(pay_app):
    out = sandbox_cli(pay_app, "pay", "cs_test_nope")
    assert out.exit_code == 1 and "No payment started here" in out.output


def test_the_page_is_for_admins_only(pay_app, login):
    admin = login("admin")
    assert admin.get("/sandbox/").status_code == 200
    assert 'href="/sandbox/"' in admin.get("/").get_data(as_text=True)
    for role in ("support", "finance"):
        assert login(role).get("/sandbox/").status_code == 403


def test_the_page_and_its_nav_line_are_absent_when_not_on_doubles(app, login):
    # no provider configured at all, as in production without keys; then real API bases
    admin = login("admin")
    assert admin.get("/sandbox/").status_code == 404
    app.config.update(STRIPE_SECRET_KEY="sk_test_x", RAZORPAY_KEY_ID="rzp_test_x",
                      RAZORPAY_KEY_SECRET="s")
    assert admin.get("/sandbox/").status_code == 404
    assert admin.post("/sandbox/payments/1/pay").status_code == 404
    assert 'href="/sandbox/"' not in admin.get("/").get_data(as_text=True)
    assert sandbox_service.any_available() is False
