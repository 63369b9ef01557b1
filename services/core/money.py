"""Money as integer minor units of a currency: how many decimals a currency has, one source.

The number of decimals comes from Babel's currency data (CLDR): JPY 0, USD 2, KWD 3, and 2 for a
code Babel does not know. CLDR's digits are display digits: for a few currencies it shows whole
units where ISO 4217, Stripe and Razorpay count hundredths (HUF, IDR, COP...) or thousandths
(IQD); ISO_MINOR_UNITS corrects those, so 100000 HUF from a provider is 1,000.00 HUF here.
Every place that turns minor units into an amount (or back) or into
micros (millionths of the major unit, the cost basis of the reports) goes through here.
"""
from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from functools import cache

from babel.core import get_global
from babel.numbers import get_currency_precision

DEFAULT_CURRENCY = "USD"
# Current currencies whose CLDR display digits (0) are not their ISO 4217 minor units.
ISO_MINOR_UNITS = {"AFN": 2, "ALL": 2, "COP": 2, "HUF": 2, "IDR": 2, "IQD": 3, "IRR": 2, "KPW": 2,
                   "LAK": 2, "LBP": 2, "MMK": 2, "SLL": 2, "SOS": 2, "SYP": 2, "YER": 2}


def _code(currency: str | None) -> str:
    return (currency or DEFAULT_CURRENCY).strip().upper()


@cache
def minor_units(currency: str | None) -> int:
    """Decimals of the currency's minor unit: 0 for JPY, 2 for USD and HUF, 3 for KWD."""
    code = _code(currency)
    return ISO_MINOR_UNITS.get(code) or get_currency_precision(code)


def to_minor(amount: Decimal, currency: str | None) -> int:
    """12.345 KWD -> 12345, 19.99 USD -> 1999, 500 JPY -> 500 (half up beyond the minor unit)."""
    scaled = Decimal(amount).scaleb(minor_units(currency))
    return int(scaled.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def from_minor(minor: int, currency: str | None) -> Decimal:
    """1999 USD -> Decimal('19.99'), 12345 KWD -> Decimal('12.345'), 500 JPY -> Decimal('500')."""
    return Decimal(int(minor)).scaleb(-minor_units(currency))


def micros_per_minor(currency: str | None) -> int:
    """Millionths of the major unit in one minor unit: 10,000 for USD, 1,000,000 for JPY."""
    return 10 ** (6 - minor_units(currency))


@cache
def micros_per_minor_by_code() -> dict[str, int]:
    """Every currency whose minor unit is not a hundredth, with its micros per minor unit (for
    SQL, where a CASE over these codes stands in for micros_per_minor; the rest are 10,000)."""
    usual = micros_per_minor(DEFAULT_CURRENCY)
    codes = {code: micros_per_minor(code) for code in get_global("currency_fractions")
             if code != "DEFAULT"}
    return {code: scale for code, scale in sorted(codes.items()) if scale != usual}
