"""Where the low-balance threshold is set: the plan form, the customer page, the customer API."""
from __future__ import annotations

from models import AuditLog, Customer, Plan, db
from services.ledger import crossings

PLAN = {"name": "Team", "interval": "month", "price": "49.00", "currency": "USD",
        "monthly_credits": "5000", "credit_expiry_days": "31"}


def test_plan_form_sets_and_clears_the_plans_threshold(login, make):
    admin = login("admin")
    assert "Low-balance threshold" in admin.get("/plans/new").get_data(as_text=True)
    resp = admin.post("/plans/", data={**PLAN, "code": "team", "low_balance_threshold": "250"})
    assert resp.status_code == 302
    plan = db.session.query(Plan).filter_by(code="team").one()
    assert plan.low_balance_threshold == 250
    c = make.customer(plan=plan)
    assert crossings.effective_threshold(c) == 250
    resp = admin.htmx("/plans/", method="POST", data={**PLAN, "code": "bad",
                                                      "low_balance_threshold": "-1"})
    assert resp.status_code == 422 and db.session.query(Plan).filter_by(code="bad").count() == 0


def test_customer_page_shows_and_sets_the_customers_threshold(login, make):
    plan = make.plan(low_balance_threshold=300)
    c = make.customer(plan=plan, credits=200)
    admin = login("admin")
    html = admin.get(f"/customers/{c.id}").get_data(as_text=True)
    assert "below 300 credits" in html and f"plan {plan.name}" in html and "low balance" in html
    resp = admin.htmx(f"/customers/{c.id}/low-balance-threshold", "POST",
                      data={"low_balance_threshold": "50"})
    body = resp.get_data(as_text=True)
    assert resp.status_code == 200 and "<html" not in body and 'id="balance-panel"' in body
    assert "below 50 credits" in body and "this customer" in body and "low balance" not in body
    db.session.expire_all()
    assert db.session.get(Customer, c.id).low_balance_threshold == 50
    row = db.session.query(AuditLog).filter_by(action="customers.low_balance_threshold").one()
    assert (row.before, row.after) == ({"low_balance_threshold": None}, {"low_balance_threshold": 50})
    resp = admin.htmx(f"/customers/{c.id}/low-balance-threshold", "POST",
                      data={"low_balance_threshold": "-5"})
    assert resp.status_code == 422 and "must be between 0" in resp.get_data(as_text=True)
    resp = admin.post(f"/customers/{c.id}/low-balance-threshold", data={"low_balance_threshold": ""})
    assert resp.status_code == 302  # empty: back to the plan's
    db.session.expire_all()
    assert db.session.get(Customer, c.id).low_balance_threshold is None


def test_only_admins_set_a_customers_threshold(login, make):
    c = make.customer()
    support = login("support")
    assert "Save threshold" not in support.get(f"/customers/{c.id}").get_data(as_text=True)
    resp = support.post(f"/customers/{c.id}/low-balance-threshold", data={"low_balance_threshold": "5"})
    assert resp.status_code == 403
    db.session.expire_all()
    assert db.session.get(Customer, c.id).low_balance_threshold is None


def test_customer_api_upsert_sets_keeps_and_clears_the_threshold(api, make):
    status, body, _ = api.put("/api/v1/customers/t-1", {"email": "t@example.com",
                                                        "low_balance_threshold": 40})
    assert status == 201
    data = body["data"]
    assert (data["low_balance_threshold"], data["low_balance_threshold_override"]) == (40, 40)
    status, body, _ = api.put("/api/v1/customers/t-1", {"email": "t@example.com"})  # absent: kept
    assert body["data"]["low_balance_threshold"] == 40
    status, body, _ = api.put("/api/v1/customers/t-1", {"email": "t@example.com",
                                                        "low_balance_threshold": None})
    data = body["data"]
    assert (data["low_balance_threshold"], data["low_balance_threshold_override"]) == (100, None)
    status, body, _ = api.put("/api/v1/customers/t-1", {"email": "t@example.com",
                                                        "low_balance_threshold": -1})
    assert status == 422
