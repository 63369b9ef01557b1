"""Checkout of a package priced per credit: the provider doubles are asked for credits x the
price per credit of the package's currency less its discount, read at checkout time; the
payment keeps what was charged. And the demo data: Razorpay sells INR packages."""
from __future__ import annotations

from sqlalchemy import func, select

from models import CreditPackage, Payment, db
from services.catalog import packages as package_prices
from services.core import settings as app_settings
from services.demo import dataset as demo
from tests.helpers import assert_error
from tests.payments.helpers import buy, grants_of, payment, verify


def _set(key: str, value: int) -> None:
    app_settings.update(key=key, value=value, reason="test price")


def test_stripe_checkout_charges_the_per_credit_price_of_now(pay_api, make, stripe_server):
    make.customer(external_id="u-1")
    pack = make.package(credits=1500, price_minor=9999, currency="USD", pricing="per_credit",
                        discount_bp=1250)
    _set("price_per_credit_minor", 3)

    first = buy(pay_api, "u-1", "stripe", package_id=pack.id)
    _set("price_per_credit_minor", 4)
    second = buy(pay_api, "u-1", "stripe", package_id=pack.id)

    sent = [r.body["line_items"][0]["price_data"]["unit_amount"]
            for r in stripe_server.requests_to("POST", "/v1/checkout/sessions")]
    # 1,500 x 3c less 12.5% = 3,937.5 -> 3,938; then 1,500 x 4c less 12.5% = 5,250
    assert sent == ["3938", "5250"]
    assert (payment(first["payment_id"]).amount_minor,
            payment(second["payment_id"]).amount_minor) == (3938, 5250)


def test_razorpay_order_charges_the_inr_per_credit_price_and_settles_it(pay_api, make,
                                                                       razorpay_server):
    make.customer(external_id="u-2")
    pack = make.package(credits=2000, price_minor=1, currency="INR", pricing="per_credit",
                        discount_bp=1000)
    _set("price_per_credit_inr_minor", 84)

    data = buy(pay_api, "u-2", "razorpay", package_id=pack.id)

    assert (data["amount"], data["currency"], data["credits"]) == (151_200, "INR", 2000)
    assert razorpay_server.orders[data["order_id"]]["amount"] == 151_200
    pay_id = razorpay_server.pay_order(data["order_id"])
    status, body = verify(pay_api, data["order_id"], pay_id,
                          razorpay_server.payment_signature(data["order_id"], pay_id))
    assert status == 200 and body["data"]["credits_added"] == 2000
    # A later price change leaves the paid payment (and its grant's cost) as charged.
    _set("price_per_credit_inr_minor", 100)
    p = payment(data["payment_id"])
    assert (p.status, p.amount_minor, p.currency) == ("paid", 151_200, "INR")
    [entry] = grants_of(p.id)
    assert entry.amount == 2000


def test_per_credit_package_without_a_price_per_credit_cannot_be_bought(pay_api, make,
                                                                        razorpay_server):
    make.customer(external_id="u-3")
    pack = make.package(credits=100, currency="INR", pricing="per_credit")  # no INR price set

    status, body, _ = pay_api.post("/api/v1/customers/u-3/purchases",
                                   {"provider": "razorpay", "package_id": pack.id})

    assert_error(status, body, "CONFLICT", 409)
    assert "no price per credit in INR" in body["error"]
    assert razorpay_server.orders == {} and db.session.scalar(select(func.count(Payment.id))) == 0


def test_fixed_packages_still_charge_their_fixed_price(pay_api, make, stripe_server):
    make.customer(external_id="u-4")
    pack = make.package(credits=100, price_minor=777)
    _set("price_per_credit_minor", 50)
    buy(pay_api, "u-4", "stripe", package_id=pack.id)
    sent = stripe_server.requests_to("POST", "/v1/checkout/sessions")[0]
    assert sent.body["line_items"][0]["price_data"]["unit_amount"] == "777"


def test_demo_razorpay_purchases_are_inr_packages_at_their_per_credit_price(app):
    demo.load(customers=80, months=3, seed=5)
    inr = {p.id: p for p in db.session.scalars(select(CreditPackage)
                                               .where(CreditPackage.currency == "INR"))}
    assert inr and all(p.pricing == "per_credit" for p in inr.values())
    assert app_settings.get("price_per_credit_inr_minor") == demo.INR_PER_USD
    rzp = list(db.session.scalars(select(Payment).where(Payment.provider == "razorpay")))
    stripe = list(db.session.scalars(select(Payment).where(Payment.provider == "stripe",
                                                           Payment.kind == "package")))
    assert rzp and stripe
    for p in rzp:
        pack = inr[p.package_id]
        assert (p.currency, p.kind, p.credits) == ("INR", "package", pack.credits)
        assert p.amount_minor == package_prices.effective_price(pack)
    assert all(p.currency == "USD" and p.package_id not in inr for p in stripe)
    # Each INR pack costs INR_PER_USD x its USD twin: the demo's totals keep their old meaning.
    usd = {p.credits: p.price_minor for p in db.session.scalars(
        select(CreditPackage).where(CreditPackage.currency == "USD"))}
    assert {p.credits: package_prices.effective_price(p) for p in inr.values()} == \
        {c: m * demo.INR_PER_USD for c, m in usd.items()}
