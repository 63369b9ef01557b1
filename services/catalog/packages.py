"""What a credit package sells for: its fixed price, or the price per credit of its currency.

A package is priced `fixed` (it sells at `price_minor`) or `per_credit`: credits x the price per
credit of its currency (settings `price_per_credit_minor` for USD, `price_per_credit_inr_minor`
for INR; services/core/settings.PRICE_PER_CREDIT), less the package's own discount in basis
points. The rule, in integers only:

    amount = credits * price_per_credit * (10,000 - discount_bp) / 10,000

rounded half up to a whole minor unit, and never below 1 minor unit. Checkout reads the
setting from the database (`fresh`), so a change applies to the next checkout at once; the
amount charged is stored on the payment, so past payments never change.
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from models import CreditPackage, db
from services.core import settings as app_settings

BP = 10_000  # basis points in 100%
MAX_DISCOUNT_BP = 9_000  # 90%


def per_credit_amount(*, credits: int, price_per_credit: int, discount_bp: int = 0) -> int:
    """Credits at a price per credit less a discount, rounded half up, at least 1 minor unit."""
    q, r = divmod(credits * price_per_credit * (BP - discount_bp), BP)
    return max(1, q + (1 if 2 * r >= BP else 0))


def price_per_credit(currency: str, *, fresh: bool = False) -> int | None:
    """The price per credit (minor units) of a currency, or None when it has none (or 0)."""
    key = app_settings.PRICE_PER_CREDIT.get((currency or "").upper())
    if key is None:
        return None
    return int(app_settings.get(key, fresh=fresh)) or None


def currencies() -> tuple[str, ...]:
    """Currencies that can have a price per credit."""
    return tuple(app_settings.PRICE_PER_CREDIT)


def effective_price(package: CreditPackage, *, fresh: bool = False,
                    per_credit: int | None = None) -> int | None:
    """What the package sells for now, in minor units; None when it is priced per credit and
    its currency has no price per credit (it cannot be sold). `per_credit` overrides the
    setting (what a change of it would do)."""
    if package.pricing != "per_credit":
        return package.price_minor
    ppc = per_credit if per_credit is not None else price_per_credit(package.currency, fresh=fresh)
    if not ppc:
        return None
    return per_credit_amount(credits=package.credits, price_per_credit=ppc,
                             discount_bp=package.discount_bp or 0)


def effective_prices(rows) -> dict[int, int | None]:
    """id -> effective price of each package (no query beyond the cached settings)."""
    return {p.id: effective_price(p) for p in rows}


@dataclass(frozen=True)
class Follower:
    """An active package priced per credit, and its price now and after a change."""

    package: CreditPackage
    old: int | None
    new: int | None


def following(*, currency: str | None = None) -> list[CreditPackage]:
    """Active packages priced per credit (of one currency), in catalogue order."""
    q = select(CreditPackage).where(CreditPackage.pricing == "per_credit",
                                    CreditPackage.archived_at.is_(None))
    if currency:
        q = q.where(CreditPackage.currency == currency.upper())
    return list(db.session.scalars(q.order_by(CreditPackage.currency, CreditPackage.sort_order,
                                              CreditPackage.id)))


def setting_impact(key: str, raw) -> list[Follower] | None:
    """What setting price-per-credit `key` to `raw` would do to the packages that follow it
    (old -> new price); None when `key` is no price per credit. An unreadable or negative value
    gives new prices of None."""
    currency = next((c for c, k in app_settings.PRICE_PER_CREDIT.items() if k == key), None)
    if currency is None:
        return None
    try:
        value = int(str(raw).strip().replace(",", ""))
    except (TypeError, ValueError):
        value = None
    if value is not None and not 0 <= value <= 10**12:
        value = None
    out = []
    for p in following(currency=currency):
        new = effective_price(p, per_credit=value) if value else None
        out.append(Follower(package=p, old=effective_price(p), new=new))
    return out
