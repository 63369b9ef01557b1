"""Minor units, one source (services/core/money.py, Babel's currency data): what staff see, what a
typed price stores, and what a bucket is worth in the reports, for 0-, 2- and 3-decimal currencies."""
from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from dashboard.filters import money as shown
from models import CreditPackage, Plan, db, utcnow
from services.core import money
from services.ledger import posting as ledger
from services.ledger import rollup as ledger_rollup
from services.reporting import analytics


@pytest.mark.parametrize(("currency", "digits", "typed", "minor", "micros"), [
    ("JPY", 0, "500", 500, 1_000_000),
    ("usd", 2, "19.99", 1999, 10_000),
    ("KWD", 3, "12.345", 12345, 1_000),
    ("XTS", 2, "0.01", 1, 10_000),  # a code without data counts in hundredths
])
def test_minor_units_come_from_babel(currency, digits, typed, minor, micros):
    assert money.minor_units(currency) == digits
    assert money.to_minor(Decimal(typed), currency) == minor
    assert money.from_minor(minor, currency) == Decimal(typed)
    assert str(money.from_minor(minor, currency)) == typed  # the edit form shows it as typed
    assert money.micros_per_minor(currency) == micros


def test_to_minor_rounds_half_up_beyond_the_minor_unit():
    assert money.to_minor(Decimal("19.995"), "USD") == 2000
    assert money.to_minor(Decimal("0.4"), "JPY") == 0
    assert money.to_minor(Decimal("1.2345"), "KWD") == 1235


def test_sql_scale_lists_every_currency_not_counted_in_hundredths():
    scales = money.micros_per_minor_by_code()
    assert scales["JPY"] == 1_000_000 and scales["KWD"] == scales["BHD"] == 1_000
    assert "USD" not in scales and "EUR" not in scales and "INR" not in scales


@pytest.mark.parametrize(("minor", "currency", "text"), [
    (500, "JPY", "¥500"),
    (1999, "USD", "$19.99"),
    (12345, "KWD", "12.345 KWD"),
    (-1999, "usd", "−$19.99"),
    (123456789, "USD", "$1,234,567.89"),
    (1234567, "KWD", "1,234.567 KWD"),
    (5, "EUR", "€0.05"),
    (None, "USD", "—"),
])
def test_money_filter(minor, currency, text):
    assert shown(minor, currency) == text


def test_a_three_decimal_price_is_typed_stored_shown_and_edited_exactly(login, make):
    admin = login("admin")
    admin.post("/packages/", data={"code": "kwd", "name": "Kuwait pack", "credits": "500",
                                   "price": "12.345", "currency": "kwd", "sort_order": "1"})
    pack = db.session.query(CreditPackage).filter_by(code="kwd").one()
    assert (pack.price_minor, pack.currency) == (12345, "KWD")
    assert "12.345 KWD" in admin.get("/packages/").get_data(as_text=True)
    edit = admin.get(f"/packages/{pack.id}").get_data(as_text=True)
    assert 'value="12.345"' in edit  # not rounded to 12.35 (which would save 12350)
    admin.post(f"/packages/{pack.id}", data={"name": "Kuwait pack", "credits": "500", "price": "12.345",
                                             "currency": "KWD", "sort_order": "1", "confirm": "y"})
    db.session.expire_all()
    assert db.session.get(CreditPackage, pack.id).price_minor == 12345


def test_plan_prices_follow_the_currency_too(login, make):
    admin = login("admin")
    for code, price, cur in (("yen", "980", "JPY"), ("dinar", "4.5", "BHD")):
        admin.post("/plans/", data={"code": code, "name": code.title(), "interval": "month",
                                    "price": price, "currency": cur, "monthly_credits": "100"})
    plans = {p.code: p.price_minor for p in db.session.query(Plan)}
    assert plans == {"yen": 980, "dinar": 4500}
    listing = admin.get("/plans/").get_data(as_text=True)
    assert "¥980" in listing and "4.500 BHD" in listing


@pytest.mark.parametrize(("currency", "cost_minor", "value_micros"), [
    ("KWD", 12345, 1_234_500),     # 100 of 1,000 credits bought for 12.345 KWD: 1.2345 KWD
    ("JPY", 500, 50_000_000),      # 100 of 1,000 credits bought for ¥500: ¥50
    ("USD", 1999, 1_999_000),      # 100 of 1,000 credits bought for $19.99: $1.999
])
def test_spent_credits_are_valued_in_the_bucket_currency(make, currency, cost_minor, value_micros):
    make.feature_price(feature="chat", credits_per_unit=1, provider_cost_micros=0, currency=currency)
    c = make.customer()
    pay = make.payment(c, amount_minor=cost_minor, currency=currency, credits=1000)
    ledger.grant(customer_id=c.id, credits=1000, source="purchase", cost_minor=cost_minor,
                 currency=currency, payment_id=pay.id, key="pay")
    ledger.debit(customer_id=c.id, credits=100, feature="chat", quantity=100, key="d")
    today = utcnow().date()
    rng = analytics.Range(today, today)
    live = analytics.build(rng, use_rollup=False).economics
    ledger_rollup.refresh(now=utcnow() + timedelta(days=1))
    rolled = analytics.build(rng).economics
    for econ in (live, rolled):
        assert econ.currency == currency
        assert {r.feature: r.revenue_micros for r in econ.rows} == {"chat": value_micros}


def test_provider_minor_units_win_over_cldr_display_digits():
    # CLDR shows HUF and IDR in whole units; Stripe, Razorpay and ISO 4217 count hundredths.
    assert (money.minor_units("HUF"), money.minor_units("IDR"), money.minor_units("IQD")) == (2, 2, 3)
    assert money.from_minor(100000, "HUF") == Decimal("1000.00")
