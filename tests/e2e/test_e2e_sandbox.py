"""Browser test: the Sandbox page pays a waiting checkout and refunds it, in Chromium, against a
gunicorn server whose Stripe and Razorpay SDKs point at the local provider doubles. The credits
move only through the providers' signed webhooks, posted by the page's server to itself."""
from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.e2e.conftest import sign_in
from tests.payments.test_sandbox import balance, start_purchases


def test_the_sandbox_page_pays_and_refunds_in_the_browser(app, live, make, browser):
    server = live(workers=2)
    customer, checkout, order = start_purchases(app, make, server)
    admin = make.staff(role="admin")
    customer_id, email, password = customer.id, admin.email, admin.plain_password
    from models import db
    db.session.commit()

    context = browser.new_context(base_url=server.url, viewport={"width": 1360, "height": 900})
    context.set_default_timeout(20_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("dialog", lambda dialog: dialog.accept())  # the refund's confirmation
    try:
        sign_in(page, email, password)
        page.get_by_role("link", name="Sandbox").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Sandbox")
        page.wait_for_load_state()  # htmx (deferred) listening, or the buttons post a whole page
        waiting = page.locator(".panel", has=page.get_by_role("heading", name="Waiting for the customer"))
        paid = page.locator(".panel", has=page.get_by_role("heading", name="Paid, can be refunded"))
        stripe_row = waiting.locator("tr", has_text=f"#{checkout.payment_id}")
        expect(stripe_row).to_contain_text("stripe")
        expect(waiting.locator("tr", has_text=f"#{order.payment_id}")).to_contain_text("razorpay")
        page.evaluate("window.__same_page = true")

        stripe_row.get_by_role("button", name="Pay").click()
        paid_row = paid.locator("tr", has_text=f"#{checkout.payment_id}")
        expect(paid_row).to_contain_text("stripe")
        expect(stripe_row).to_have_count(0)
        expect(page.get_by_text(re.compile(r"checkout\.session\.completed"))).to_be_visible()
        assert balance(customer_id) == 500  # granted by the webhook the page's server received

        paid_row.get_by_role("button", name="Refund").click()
        expect(page.get_by_text(re.compile(rf"Refunded payment #{checkout.payment_id}"))).to_be_visible()
        expect(paid_row).to_have_count(0)  # nothing left to refund
        assert balance(customer_id) == 0  # clawed back by the refund webhook
        assert page.evaluate("window.__same_page") is True  # htmx swaps, no page load
        assert errors == []
    finally:
        context.close()
