"""The active catalogue: credit packages and plans, for the product's pricing page."""
from __future__ import annotations

from flask import Blueprint
from sqlalchemy import select

from dashboard.api import schemas as sc
from dashboard.api.auth import api_key_required
from dashboard.api.core import describe, ok
from models import CreditPackage, Plan, db
from services.catalog import packages as package_prices

bp = Blueprint("api_catalog", __name__, url_prefix="/api/v1")


@bp.get("/packages")
@describe(summary="Active credit packages", response=sc.PackageList, tag="catalog")
@api_key_required()
def packages():
    """`price_minor` is what a checkout started now charges: the fixed price, or credits at the
    price per credit of the currency less `discount_bp` (a package priced per credit in a
    currency without one cannot be bought and is left out)."""
    rows = db.session.scalars(select(CreditPackage).where(CreditPackage.archived_at.is_(None))
                              .order_by(CreditPackage.sort_order, CreditPackage.price_minor,
                                        CreditPackage.id))
    out = []
    for p in rows:
        price = package_prices.effective_price(p)
        if price is not None:
            out.append({"id": p.id, "code": p.code, "name": p.name, "credits": p.credits,
                        "price_minor": price, "currency": p.currency,
                        "expiry_days": p.expiry_days, "pricing": p.pricing,
                        "discount_bp": p.discount_bp})
    return ok({"packages": out})


@bp.get("/plans")
@describe(summary="Active plans", response=sc.PlanList, tag="catalog")
@api_key_required()
def plans():
    rows = db.session.scalars(select(Plan).where(Plan.archived_at.is_(None))
                              .order_by(Plan.price_minor, Plan.id))
    return ok({"plans": [{"id": p.id, "code": p.code, "name": p.name, "interval": p.interval,
                          "price_minor": p.price_minor, "currency": p.currency,
                          "monthly_credits": p.monthly_credits,
                          "credit_expiry_days": p.credit_expiry_days,
                          "description": p.description} for p in rows]})
