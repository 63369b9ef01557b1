"""The active catalogue: credit packages and plans, for the product's pricing page."""
from __future__ import annotations

from flask import Blueprint
from sqlalchemy import select

from dashboard.api import schemas as sc
from dashboard.api.auth import api_key_required
from dashboard.api.core import describe, ok
from models import CreditPackage, Plan, db

bp = Blueprint("api_catalog", __name__, url_prefix="/api/v1")


@bp.get("/packages")
@describe(summary="Active credit packages", response=sc.PackageList, tag="catalog")
@api_key_required()
def packages():
    rows = db.session.scalars(select(CreditPackage).where(CreditPackage.archived_at.is_(None))
                              .order_by(CreditPackage.sort_order, CreditPackage.price_minor,
                                        CreditPackage.id))
    return ok({"packages": [{"id": p.id, "code": p.code, "name": p.name, "credits": p.credits,
                             "price_minor": p.price_minor, "currency": p.currency,
                             "expiry_days": p.expiry_days} for p in rows]})


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
