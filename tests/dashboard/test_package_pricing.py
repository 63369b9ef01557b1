"""Packages priced per credit: the effective price (rounding, discount), the package form's
validation, the lists, the settings page (who follows the price per credit, the preview of a
change) and the API's package listing."""
from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal

import pytest

from models import AuditLog, CreditPackage, SettingChange, db
from services.catalog import edit as catalog
from services.catalog import packages as package_prices
from services.core import settings as app_settings
from services.core.errors import ValidationFailed

PACK = {"name": "India pack", "credits": "2000", "currency": "INR", "pricing": "per_credit",
        "discount": "10", "sort_order": "0"}


def _set(key: str, value: int, staff=None) -> None:
    app_settings.update(key=key, value=value, staff=staff, reason="test price")


def _pack(make, **kw) -> CreditPackage:
    return make.package(**{"credits": 2000, "price_minor": 1, "currency": "USD",
                           "pricing": "per_credit", **kw})


# --- the rule --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("credits", "ppc", "bp", "expected"), [
    (500, 1, 0, 500),          # no discount: credits x price
    (2000, 84, 1000, 151200),  # 10% off Rs 0.84 a credit
    (333, 3, 1250, 874),       # 874.125 -> down
    (1, 5, 1000, 5),           # 4.5 -> half up
    (1, 5, 3000, 4),           # 3.5 -> half up
    (3, 1, 5000, 2),           # 1.5 -> half up
    (7, 1, 5500, 3),           # 3.15 -> down
    (1, 1, 9000, 1),           # 0.1 would be 0: never below one minor unit
])
def test_per_credit_amount_rounds_half_up_to_a_minor_unit(credits, ppc, bp, expected):
    assert package_prices.per_credit_amount(credits=credits, price_per_credit=ppc,
                                            discount_bp=bp) == expected


def test_per_credit_amount_agrees_with_decimal_half_up_everywhere():
    for credits in range(1, 60):
        for ppc in (1, 2, 3, 7, 84):
            for bp in (0, 1, 333, 1250, 2500, 4999, 5000, 9000):
                exact = Decimal(credits * ppc) * (Decimal(10_000 - bp) / Decimal(10_000))
                want = max(1, int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP)))
                got = package_prices.per_credit_amount(credits=credits, price_per_credit=ppc,
                                                       discount_bp=bp)
                assert got == want, (credits, ppc, bp)


def test_effective_price_follows_the_setting_of_the_package_currency(make):
    fixed = make.package(credits=1000, price_minor=1234)
    usd = _pack(make, credits=1000, discount_bp=2000)
    inr = _pack(make, credits=1000, currency="INR", discount_bp=0)
    _set("price_per_credit_minor", 3)
    assert package_prices.effective_price(fixed) == 1234
    assert package_prices.effective_price(usd) == 2400
    assert package_prices.effective_price(inr) is None  # no INR price per credit by default
    _set("price_per_credit_inr_minor", 90)
    assert package_prices.effective_price(inr) == 90_000
    assert package_prices.price_per_credit("EUR") is None


# --- the form --------------------------------------------------------------------------------------

def test_create_a_per_credit_package_through_the_form(login, make):
    _set("price_per_credit_inr_minor", 84)
    admin = login("admin")
    resp = admin.post("/packages/", data={**PACK, "code": "india"})
    assert resp.status_code in (302, 303), resp.get_data(as_text=True)
    pack = db.session.query(CreditPackage).filter_by(code="india").one()
    assert (pack.pricing, pack.discount_bp, pack.currency) == ("per_credit", 1000, "INR")
    assert package_prices.effective_price(pack) == 151_200
    row = db.session.query(AuditLog).filter_by(action="packages.create").one()
    assert row.after["pricing"] == "per_credit" and row.after["discount_bp"] == 1000


@pytest.mark.parametrize(("data", "field", "message"), [
    ({"discount": "95"}, "discount", "between 0% and 90%"),
    ({"discount": "-1"}, "discount", "between 0% and 90%"),
    ({"discount": "12.345"}, "discount", "two decimals"),
    ({"currency": "EUR"}, "pricing", "no price per credit in EUR"),
    ({"pricing": "fixed", "price": "", "discount": "0"}, "price", "required"),
    ({"pricing": "fixed", "price": "10.00", "discount": "5"}, "discount",
     "only to a package priced per credit"),
    ({"pricing": "free"}, "pricing", "Not a valid choice"),
], ids=["over-90", "negative", "three-decimals", "no-price-per-credit", "fixed-needs-price",
        "fixed-no-discount", "unknown-mode"])
def test_package_form_validation(login, make, data, field, message):
    _set("price_per_credit_inr_minor", 84)
    admin = login("admin")
    resp = admin.htmx("/packages/", method="POST", data={**PACK, "code": "bad", **data})
    html = resp.get_data(as_text=True)
    assert resp.status_code == 422 and message in html, html
    assert re.search(rf'id="{field}"[^>]*aria-invalid="true"|aria-invalid="true"[^>]*id="{field}"', html)
    assert db.session.query(CreditPackage).filter_by(code="bad").count() == 0


def test_per_credit_needs_a_price_per_credit_in_the_service_too(make):
    with pytest.raises(ValidationFailed) as err:
        catalog.create("package", {"code": "x", "name": "X", "credits": 10, "currency": "INR",
                                   "pricing": "per_credit", "discount_bp": 0}, staff=None)
    assert "no price per credit in INR" in err.value.details["pricing"]


def test_switching_to_per_credit_previews_the_new_price_then_saves(login, make):
    pack = make.package(credits=1000, price_minor=1500)  # $15 fixed
    c = make.customer()
    make.payment(c, package_id=pack.id, amount_minor=1500)
    _set("price_per_credit_minor", 2)
    admin = login("admin")
    form = {"name": pack.name, "credits": "1000", "price": "15.00", "currency": "USD",
            "pricing": "per_credit", "discount": "25", "sort_order": "0"}
    html = admin.htmx(f"/packages/{pack.id}", method="POST", data=form).get_data(as_text=True)
    # 1,000 credits x $0.02 less 25% = $15.00 -> the same money; the review says so.
    assert "Review before saving" in html and "fixed price → price per credit" in html
    assert "0% → 25%" in html and "$15.00" in html
    form["discount"] = "50"
    html = admin.htmx(f"/packages/{pack.id}", method="POST", data=form).get_data(as_text=True)
    assert "$10.00" in html and "−$5.00" in html  # one purchase a month at $10 instead of $15
    live = admin.htmx(f"/packages/{pack.id}/impact?credits=1000&pricing=per_credit&discount=50"
                      "&currency=USD").get_data(as_text=True)
    assert "−$5.00" in live and "<html" not in live
    admin.post(f"/packages/{pack.id}", data={**form, "confirm": "y"})
    db.session.expire_all()
    saved = db.session.get(CreditPackage, pack.id)
    assert (saved.pricing, saved.discount_bp, saved.price_minor) == ("per_credit", 5000, 1500)
    row = db.session.query(AuditLog).filter_by(action="packages.update").one()
    assert row.before == {"pricing": "fixed", "discount_bp": 0}
    assert row.after == {"pricing": "per_credit", "discount_bp": 5000}


# --- lists -----------------------------------------------------------------------------------------

def test_list_shows_the_effective_price_and_marks_per_credit_packages(login, make):
    make.package(name="Fixed one", credits=1000, price_minor=999)
    _pack(make, name="Follower", credits=4000, discount_bp=1250)
    _pack(make, name="Rupees", credits=100, currency="INR")
    _set("price_per_credit_minor", 2)
    html = login("admin").get("/packages/").get_data(as_text=True)
    follower = html[html.index("Follower"):html.index("Rupees")]
    # 4,000 x $0.02 less 12.5% = $70.00, $17.50 per 1,000 credits
    assert "per credit" in follower and "12.5%" in follower
    assert "$70.00" in follower and "$17.50" in follower
    assert "not for sale" in html[html.index("Rupees"):]
    fixed = html[html.index("Fixed one"):html.index("Follower")]
    assert "$9.99" in fixed and "per credit" not in fixed


# --- settings page ---------------------------------------------------------------------------------

def test_settings_page_lists_the_packages_that_follow_the_price_per_credit(login, make):
    _pack(make, name="Follower", code="follower", credits=1500, discount_bp=1000)
    make.package(name="Fixed one", credits=1000, price_minor=999)
    _pack(make, name="Gone", credits=10, archived_at=db.func.now())
    _set("price_per_credit_minor", 3)
    html = login("admin").get("/settings/").get_data(as_text=True)
    panel = html[html.index('id="per-credit"'):html.index('id="history"')]
    assert "Follower" in panel and "10%" in panel and "$40.50" in panel  # 1,500 x 3c less 10%
    assert "Fixed one" not in panel and "Gone" not in panel
    assert 'id="setting-price_per_credit_inr_minor"' in html


def test_settings_page_says_when_no_package_follows_it(login):
    html = login("admin").get("/settings/").get_data(as_text=True)
    assert "No package is priced per credit" in html


def test_impact_preview_of_a_price_per_credit_change_lists_old_and_new_prices(login, make):
    _pack(make, name="Follower", credits=1000, discount_bp=2000)
    _pack(make, name="Rupee pack", credits=1000, currency="INR")
    make.package(name="Fixed one", credits=1000, price_minor=999)
    _set("price_per_credit_minor", 2)
    admin = login("admin")
    frag = admin.htmx("/settings/impact?key=price_per_credit_minor&value=3").get_data(as_text=True)
    assert "<html" not in frag
    # $16.00 now (1,000 x 2c less 20%), $24.00 after: +$8.00
    assert re.search(r"Follower.*\$16\.00.*\$24\.00.*\+\$8\.00", frag, re.S), frag
    assert "Rupee pack" not in frag and "Fixed one" not in frag
    to_zero = admin.htmx("/settings/impact?key=price_per_credit_minor&value=0").get_data(as_text=True)
    assert "not for sale" in to_zero
    page = admin.get("/settings/impact?key=price_per_credit_minor&value=3").get_data(as_text=True)
    assert "<html" in page and "$24.00" in page and 'value="3"' in page
    assert admin.get("/settings/impact?key=refund_window_days&value=3").status_code == 302
    assert db.session.query(SettingChange).count() == 1  # a preview changes nothing


def test_inr_preview_lists_only_inr_followers(login, make):
    _pack(make, name="Follower", credits=1000)
    _pack(make, name="Rupee pack", credits=500, currency="INR", discount_bp=1000)
    _set("price_per_credit_inr_minor", 80)
    frag = login("admin").htmx("/settings/impact?key=price_per_credit_inr_minor&value=100") \
        .get_data(as_text=True)
    assert "Rupee pack" in frag and "Follower" not in frag
    assert "₹360.00" in frag and "₹450.00" in frag  # 500 x 80p less 10% -> 500 x Rs 1 less 10%


def test_price_per_credit_change_is_audited_and_refused_at_zero_while_followed(login, make):
    _pack(make, name="Follower", credits=1000)
    admin = login("admin")
    resp = admin.htmx("/settings/price_per_credit_minor", "POST",
                      data={"value": "4", "reason": "new prices"})
    assert resp.status_code == 200 and "settings-changed" in resp.headers["HX-Trigger"]
    row = db.session.query(AuditLog).filter_by(action="settings.update").one()
    assert row.before == {"price_per_credit_minor": 1} and row.after == {"price_per_credit_minor": 4}
    panel = admin.htmx("/settings/per-credit").get_data(as_text=True)
    assert "$40.00" in panel and "<html" not in panel
    refused = admin.htmx("/settings/price_per_credit_minor", "POST",
                         data={"value": "0", "reason": "stop selling"})
    assert refused.status_code == 422 and "Follower" in refused.get_data(as_text=True)
    assert app_settings.get("price_per_credit_minor") == 4


# --- API -------------------------------------------------------------------------------------------

def test_api_package_listing_gives_the_effective_price(api, make):
    make.package(code="fixed", credits=1000, price_minor=999)
    _pack(make, code="follower", credits=1000, discount_bp=1000)
    _pack(make, code="rupees", credits=1000, currency="INR")  # no INR price: not for sale
    _set("price_per_credit_minor", 2)
    status, body, _ = api.get("/api/v1/packages")
    assert status == 200
    got = {p["code"]: (p["price_minor"], p["pricing"], p["discount_bp"]) for p in body["data"]["packages"]}
    assert got == {"fixed": (999, "fixed", 0), "follower": (1800, "per_credit", 1000)}
