"""Browser tests of the operations pages: live customer search, a credit adjustment that updates
balance, statement and audit without a reload, creating a plan, a price change's impact preview,
and screenshots of the main pages for docs/screenshots."""
from __future__ import annotations

import re
import uuid

import pytest
from playwright.sync_api import expect

from tests.e2e.screenshots import out_dir

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]



def _in_app(live_server, fn):
    """Run fn() against the live server's database (for picking or preparing demo rows)."""
    from models import db

    with live_server.app.app_context():
        try:
            return fn()
        finally:
            db.session.remove()


def _a_customer(live_server):
    from sqlalchemy import select

    from models import Customer, db

    def pick():
        c = db.session.scalars(select(Customer).where(Customer.deleted_at.is_(None))
                               .order_by(Customer.id.desc())).first()
        return {"id": c.id, "name": c.name, "email": c.email, "external_id": c.external_id}

    return _in_app(live_server, pick)


def _int(text: str) -> int:
    return int(re.sub(r"[^\d]", "", text) or 0) * (-1 if text.strip().startswith("−") else 1)


def test_find_a_customer_by_live_search(login_as, live_server):
    c = _a_customer(live_server)
    page = login_as("support")
    page.get_by_role("link", name="Customers").click()
    # Typing before the page's deferred htmx has run would send no request (a race CI hit):
    # wait for the load, as a person would see the page before typing.
    page.wait_for_url(re.compile(r"/customers/$"))
    page.evaluate("window.__same_page = true")
    page.get_by_label("Search customers").press_sequentially(c["email"][:14], delay=20)
    rows = page.locator("#customer-rows tr")
    expect(rows.filter(has_text=c["email"])).to_have_count(1)
    expect(page).to_have_url(re.compile(r"/customers/\?q="))  # the query is in the URL
    page.get_by_label("Search customers").fill(c["external_id"])
    expect(rows).to_have_count(1)
    assert page.evaluate("window.__same_page") is True  # results came without a page load
    rows.first.get_by_role("link").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(c["name"] or c["email"])
    assert page.js_errors == []


def test_adjust_credits_and_see_balance_and_audit_without_a_reload(login_as, live_server):
    c = _a_customer(live_server)
    page = login_as("support")
    page.goto(f"/customers/{c['id']}")
    page.evaluate("window.__same_page = true")
    before = _int(page.locator("#balance").inner_text())
    note = f"Browser test {uuid.uuid4().hex[:8]}"
    page.get_by_label("Action").select_option("add")
    page.get_by_label("Credits", exact=True).fill("25")
    page.get_by_label("Reason code").select_option("service_issue")
    page.get_by_label("Note", exact=True).fill(note)
    page.get_by_role("button", name="Apply adjustment").click()
    expect(page.locator("#balance")).to_have_text(f"{before + 25:,}")
    expect(page.locator("#adjust-panel")).to_contain_text(f"New balance {before + 25:,}")
    activity = page.locator("#activity-panel tbody tr").first
    expect(activity).to_contain_text("credits.adjust")
    expect(activity).to_contain_text(note)
    expect(activity).to_contain_text("support@creditdesk.test")
    first_entry = page.locator("#statement-rows tr").first
    expect(first_entry).to_contain_text("+25")
    expect(first_entry).to_contain_text(note)
    assert page.evaluate("window.__same_page") is True
    # the form is fresh for the next adjustment, and a missing reason is explained inline
    page.get_by_label("Credits", exact=True).fill("5")
    page.get_by_role("button", name="Apply adjustment").click()
    expect(page.locator("#adjust-panel")).to_contain_text("Choose a reason code.")
    expect(page.locator("#balance")).to_have_text(f"{before + 25:,}")
    # Chromium logs the deliberate 422 as a console error; nothing else may appear.
    assert [e for e in page.js_errors if "status of 422" not in e] == []


def test_create_a_plan(login_as):
    page = login_as("admin")
    page.get_by_role("link", name="Plans").click()
    page.get_by_role("link", name="New plan").click()
    code = f"e2e-{uuid.uuid4().hex[:6]}"
    page.get_by_label("Code", exact=True).fill(code)
    page.get_by_label("Name", exact=True).fill(f"Studio {code}")
    page.get_by_label("Billing interval").select_option("month")
    page.get_by_label("Price", exact=True).fill("29.00")
    page.get_by_label("Credits per month").fill("3000")
    page.get_by_role("button", name="Create plan").click()
    expect(page).to_have_url(re.compile(r"/plans/$"))
    row = page.locator("tbody tr", has_text=code)
    expect(row).to_contain_text("$29.00")
    expect(row).to_contain_text("3,000")
    expect(page.locator("#flash-area")).to_contain_text("created")
    assert page.js_errors == []


def test_price_change_shows_its_impact_before_saving(login_as, live_server):
    from sqlalchemy import select

    from models import FeaturePrice, db

    price_id = _in_app(live_server, lambda: db.session.scalar(
        select(FeaturePrice.id).where(FeaturePrice.feature == "chat")))
    page = login_as("admin")
    page.goto(f"/pricing/{price_id}")
    page.get_by_label("Credits per unit").fill("2")
    impact = page.locator("#impact")
    expect(impact).to_contain_text("Based on")
    expect(impact).to_contain_text("Customers affected")
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("#editor")).to_contain_text("Review before saving")
    expect(page.get_by_role("button", name="Confirm and save")).to_be_visible()
    assert page.js_errors == []


def _prepare_screenshot_data(live_server) -> None:
    """A reconcile run and a request waiting for approval, so the overview shows them."""
    from sqlalchemy import select

    from models import AdjustmentRequest, Customer, JobRun, Staff, db

    def prepare():
        if not db.session.scalar(select(JobRun.id).where(JobRun.job == "reconcile_ledger")):
            from jobs import reconcile_ledger
            reconcile_ledger.run(period="e2e", trigger="manual")
        if not db.session.scalar(select(AdjustmentRequest.id).where(AdjustmentRequest.status == "pending")):
            from services.staff import adjustments
            support = db.session.scalar(select(Staff).where(Staff.role == "support"))
            c = db.session.scalars(select(Customer).order_by(Customer.id)).first()
            adjustments.submit(customer_id=c.id, credits=2500, reason_code="service_issue",
                               note="Video outage on 12 May, three failed renders", staff=support)

    _in_app(live_server, prepare)


def test_screenshots_of_operations_pages(login_as, live_server):
    _prepare_screenshot_data(live_server)
    c = _a_customer(live_server)
    shots = out_dir()  # docs/screenshots with UPDATE_SCREENSHOTS=1
    page = login_as("admin")
    page.set_viewport_size({"width": 1360, "height": 1100})
    # The first screen of each page (long tables are cut where a person would scroll).
    for name, path in [("overview", "/"), ("customers", "/customers/"),
                       ("customer-detail", f"/customers/{c['id']}"), ("plans", "/plans/"),
                       ("transactions", "/transactions/"), ("tasks", "/tasks/")]:
        page.goto(path)
        page.screenshot(path=str(shots / f"{name}.png"))
    page.goto("/pricing/")
    page.locator("tbody tr a").first.click()
    page.wait_for_url(re.compile(r"/pricing/\d+$"))  # loaded, htmx listening (see the live search)
    per_unit = page.get_by_label("Credits per unit")
    per_unit.fill(str(int(per_unit.input_value()) + 2))  # a real change, whatever the price is now
    expect(page.locator("#impact")).to_contain_text("Based on")
    page.screenshot(path=str(shots / "pricing-impact.png"))
    assert page.js_errors == []
    for name in ("overview", "customers", "customer-detail", "plans", "transactions", "tasks",
                 "pricing-impact"):
        assert (shots / f"{name}.png").stat().st_size > 10_000
