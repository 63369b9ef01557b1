"""Plans, credit packages and feature pricing: create, edit with an impact preview before a
price change is saved, archive instead of delete when referenced, unarchive; all audited."""
from __future__ import annotations

import pytest

from models import AuditLog, CreditPackage, FeaturePrice, Plan, db
from services.catalog import edit as catalog
from services.core.errors import ValidationFailed
from services.ledger import posting as ledger

PLAN = {"name": "Team", "interval": "month", "price": "49.00", "currency": "USD",
        "monthly_credits": "5000", "credit_expiry_days": "31"}


def _audit(action: str) -> list[AuditLog]:
    return db.session.query(AuditLog).filter_by(action=action).order_by(AuditLog.id).all()


# --- plans ------------------------------------------------------------------------------------------

def test_create_a_plan(login, make):
    admin = login("admin")
    assert "New plan" in admin.get("/plans/new").get_data(as_text=True)
    resp = admin.post("/plans/", data={**PLAN, "code": "team"})
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/plans/")
    plan = db.session.query(Plan).filter_by(code="team").one()
    assert (plan.price_minor, plan.monthly_credits, plan.credit_expiry_days) == (4900, 5000, 31)
    listing = admin.get("/plans/").get_data(as_text=True)
    assert "Team" in listing and "$49.00" in listing and "5,000" in listing
    row = _audit("plans.create")[0]
    assert row.after["code"] == "team" and row.after["price_minor"] == 4900 and row.before is None


def test_create_validates_and_keeps_what_was_typed(login, make):
    make.plan(code="taken")
    admin = login("admin")
    resp = admin.htmx("/plans/", method="POST", data={**PLAN, "code": "taken"})
    html = resp.get_data(as_text=True)
    assert resp.status_code == 422 and "already exists" in html and 'value="Team"' in html
    assert "<html" not in html
    resp = admin.post("/plans/", data={**PLAN, "code": "Bad Code!"})
    assert resp.status_code == 422 and "lower-case letters" in resp.get_data(as_text=True)
    resp = admin.post("/plans/", data={**PLAN, "code": "ok", "monthly_credits": ""})
    assert resp.status_code == 422
    assert db.session.query(Plan).count() == 1


def test_plan_price_change_shows_its_impact_before_it_is_saved(login, make):
    plan = make.plan(name="Pro", monthly_credits=1000, price_minor=1900)
    for _ in range(3):
        make.customer(plan=plan, subscription_status="active")
    make.customer(plan=plan, subscription_status="cancelled")
    admin = login("admin")
    form = {**PLAN, "name": "Pro", "price": "25.00", "monthly_credits": "1200", "credit_expiry_days": "31"}
    review = admin.htmx(f"/plans/{plan.id}", method="POST", data=form)
    html = review.get_data(as_text=True)
    assert review.status_code == 200 and "Review before saving" in html and "Confirm and save" in html
    assert "4 customers on Pro" in html
    assert "4,000" in html and "4,800" in html and "+800" in html  # credits per month
    assert "$57.00" in html and "$75.00" in html  # 3 paying subscribers
    db.session.expire_all()
    assert db.session.get(Plan, plan.id).monthly_credits == 1000  # nothing saved yet
    assert not _audit("plans.update")

    saved = admin.htmx(f"/plans/{plan.id}", method="POST", data={**form, "confirm": "y"})
    assert saved.status_code == 200 and saved.headers["HX-Redirect"] == "/plans/"
    db.session.expire_all()
    plan = db.session.get(Plan, plan.id)
    assert (plan.monthly_credits, plan.price_minor) == (1200, 2500)
    row = _audit("plans.update")[0]
    assert row.before == {"price_minor": 1900, "monthly_credits": 1000}
    assert row.after == {"price_minor": 2500, "monthly_credits": 1200}


def test_a_change_that_touches_no_price_saves_without_review(login, make):
    plan = make.plan(name="Pro", monthly_credits=1000, price_minor=1900, credit_expiry_days=31)
    admin = login("admin")
    resp = admin.post(f"/plans/{plan.id}", data={**PLAN, "name": "Pro Max", "price": "19.00",
                                                 "monthly_credits": "1000"})
    assert resp.status_code == 302
    assert _audit("plans.update")[0].after == {"name": "Pro Max"}


def test_live_impact_fragment(login, make):
    plan = make.plan(monthly_credits=100, price_minor=1000)
    make.customer(plan=plan, subscription_status="active")
    admin = login("admin")
    html = admin.htmx(f"/plans/{plan.id}/impact?monthly_credits=150&price=10.00").get_data(as_text=True)
    assert "<html" not in html and "1 customer on" in html and "+50" in html
    junk = admin.htmx(f"/plans/{plan.id}/impact?monthly_credits=lots").get_data(as_text=True)
    assert "Change the price" in junk  # unreadable input: no change to preview


def test_referenced_plan_is_archived_instead_of_deleted_and_can_come_back(login, make):
    used = make.plan(code="used")
    make.customer(plan=used)
    unused = make.plan(code="unused")
    admin = login("admin")
    confirm = admin.htmx(f"/plans/{used.id}/delete").get_data(as_text=True)
    assert "archived" in confirm and "1 customers" in confirm and "Archive instead" in confirm
    assert admin.post(f"/plans/{used.id}/delete").status_code == 302
    db.session.expire_all()
    assert db.session.get(Plan, used.id).archived_at is not None
    assert "referenced" in admin.get("/plans/").get_data(as_text=True)  # the flash says why

    assert "Delete for good" in admin.htmx(f"/plans/{unused.id}/delete").get_data(as_text=True)
    admin.post(f"/plans/{unused.id}/delete")
    assert db.session.get(Plan, unused.id) is None
    assert _audit("plans.delete")[0].before["code"] == "unused"

    active = admin.get("/plans/").get_data(as_text=True)
    archived = admin.get("/plans/?status=archived").get_data(as_text=True)
    assert ">used<" not in active and "used" in archived
    admin.post(f"/plans/{used.id}/unarchive")
    db.session.expire_all()
    assert db.session.get(Plan, used.id).archived_at is None
    assert [r.action for r in db.session.query(AuditLog).filter(AuditLog.target_type == "plan")
            .order_by(AuditLog.id)] == ["plans.archive", "plans.delete", "plans.unarchive"]


def test_catalogue_is_admin_only(login, make):
    plan = make.plan()
    for role in ("support", "finance"):
        staff = login(role)
        assert staff.get("/plans/").status_code == 403
        assert staff.get("/pricing/").status_code == 403
        assert staff.post(f"/plans/{plan.id}/archive").status_code == 403
    assert db.session.get(Plan, plan.id).archived_at is None


def test_plan_list_is_keyset_paged(login, make):
    for i in range(52):
        make.plan(code=f"p{i:02d}", name=f"Plan {i:02d}")
    admin = login("admin")
    first = admin.get("/plans/").get_data(as_text=True)
    assert first.count('href="/plans/') - first.count('href="/plans/new') - first.count("status=") >= 50
    assert "Load more" in first and "Plan 50" not in first
    nxt = admin.htmx("/plans/?status=active&after=" + str(db.session.query(Plan).order_by(Plan.id)
                                                          .all()[49].id)).get_data(as_text=True)
    assert "Plan 50" in nxt and "Plan 51" in nxt and "<table" not in nxt


# --- packages -----------------------------------------------------------------------------------

def test_package_edit_previews_revenue_and_credits(login, make):
    pack = make.package(credits=1000, price_minor=1000)
    c = make.customer()
    make.payment(c, package_id=pack.id)
    make.payment(c, package_id=pack.id)
    admin = login("admin")
    form = {"name": pack.name, "credits": "1200", "price": "12.00", "currency": "USD", "sort_order": "0"}
    html = admin.htmx(f"/packages/{pack.id}", method="POST", data=form).get_data(as_text=True)
    assert "2 purchases by 1 customer" in html and "+400" in html and "+$4.00" in html
    admin.post(f"/packages/{pack.id}", data={**form, "confirm": "y"})
    db.session.expire_all()
    saved = db.session.get(CreditPackage, pack.id)
    assert (saved.credits, saved.price_minor) == (1200, 1200)


def test_create_package_and_zero_decimal_currency(login, make):
    admin = login("admin")
    admin.post("/packages/", data={"code": "yen", "name": "Yen pack", "credits": "500", "price": "800",
                                   "currency": "jpy", "sort_order": "1"})
    pack = db.session.query(CreditPackage).filter_by(code="yen").one()
    assert (pack.price_minor, pack.currency) == (800, "JPY")
    assert "¥800" in admin.get("/packages/").get_data(as_text=True)


# --- feature pricing ----------------------------------------------------------------------------

def test_feature_price_change_previews_last_30_days_of_usage(login, make):
    price = make.feature_price(feature="image", credits_per_unit=5, provider_cost_micros=20000, unit="image")
    a, b = make.customer(credits=1000), make.customer(credits=1000)
    ledger.debit(customer_id=a.id, credits=15, feature="image", quantity=3)
    ledger.debit(customer_id=b.id, credits=10, feature="image", quantity=2)
    ledger.debit(customer_id=b.id, credits=7, feature="image")  # explicit credits: not priced
    admin = login("admin")
    listing = admin.get("/pricing/").get_data(as_text=True)
    assert "$0.02" in listing and "image" in listing  # provider cost
    form = {"label": "Image", "unit": "image", "credits_per_unit": "8",
            "provider_cost": "0.02", "currency": "USD"}
    html = admin.htmx(f"/pricing/{price.id}", method="POST", data=form).get_data(as_text=True)
    assert "5 images by 2 customers" in html
    assert ">25<" in html and ">40<" in html and "+15" in html
    assert "1 debits named their credits explicitly" in html
    admin.post(f"/pricing/{price.id}", data={**form, "confirm": "y"})
    db.session.expire_all()
    assert db.session.get(FeaturePrice, price.id).credits_per_unit == 8
    row = _audit("pricing.update")[0]
    assert row.before == {"credits_per_unit": 5} and row.after == {"credits_per_unit": 8}


def test_feature_with_usage_is_archived_not_deleted(login, make):
    price = make.feature_price(feature="chat")
    c = make.customer(credits=10)
    ledger.debit(customer_id=c.id, credits=1, feature="chat", quantity=1)
    admin = login("admin")
    admin.post(f"/pricing/{price.id}/delete")
    db.session.expire_all()
    assert db.session.get(FeaturePrice, price.id).archived_at is not None


def test_feature_key_cannot_change_on_edit(make):
    price = make.feature_price(feature="chat")
    staff = make.staff(role="admin")
    catalog.update("price", price.id, {"feature": "renamed", "label": "Chat", "unit": "message",
                                       "credits_per_unit": 2, "currency": "USD"}, staff=staff)
    db.session.expire_all()
    assert db.session.get(FeaturePrice, price.id).feature == "chat"


def test_names_are_escaped_in_the_catalogue(login, make):
    make.plan(name='"><img src=x onerror=alert(1)>')
    html = login("admin").get("/plans/").get_data(as_text=True)
    assert "<img src=x" not in html and "&lt;img src=x" in html


@pytest.mark.parametrize("data, field", [
    ({"code": "a", "name": "", "interval": "month", "monthly_credits": 1}, "name"),
    ({"code": "a", "name": "A", "interval": "weekly", "monthly_credits": 1}, "interval"),
    ({"code": "a", "name": "A", "interval": "free", "price_minor": 100, "monthly_credits": 1}, "price_minor"),
    ({"code": "a", "name": "A", "interval": "month", "monthly_credits": -5}, "monthly_credits"),
    ({"code": "a", "name": "A", "interval": "month", "monthly_credits": 5, "currency": "dollars"},
     "currency"),
])
def test_plan_validation_names_the_field(make, data, field):
    with pytest.raises(ValidationFailed) as err:
        catalog.create("plan", data, staff=make.staff(role="admin"))
    assert field in err.value.details
