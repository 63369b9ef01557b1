"""Analytics: charts of credits, revenue, refunds and breakage, and unit economics, for a range."""
from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode

from flask import Blueprint, current_app, request, url_for

from dashboard import charts, htmx
from dashboard.auth import require
from dashboard.filters import money
from dashboard.respond import hx_target
from services.reporting import analytics

bp = Blueprint("analytics", __name__, url_prefix="/analytics")
PRESETS = (7, 30, 90, 180, 365)
HALF = 420  # chart width in the half-width panels (text stays readable when scaled)
PROVIDER_CLASS = {"stripe": "s-stripe", "razorpay": "s-razorpay"}


def _price() -> int | None:
    raw = (request.args.get("price") or "").strip()
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 10 else None


def _charts(a: analytics.Analytics) -> dict:
    """Chart geometry for the page (presentation only; the figures come from the service)."""
    def fmt(cur):
        return lambda v: money(round(v), cur)

    days = a.days
    return {
        "credits": charts.lines(days, [
            ("Purchased + granted", "s-in", [p + g for p, g in zip(a.purchased, a.granted, strict=True)]),
            ("Spent", "s-out", a.spent), ("Expired", "s-exp", a.expired)]),
        "features": charts.hbars(a.features),
        "revenue": {cur: charts.columns(days, [(p, PROVIDER_CLASS.get(p, "s-other"), v)
                                               for p, v in sorted(r["providers"].items())],
                                        fmt=fmt(cur))
                    for cur, r in a.revenue.items()},
        "refunds": {cur: charts.columns(days, [(f"Refunded {cur}", "s-refund", r["per_day"])],
                                        width=HALF, height=150, fmt=fmt(cur))
                    for cur, r in a.refunds.items()},
        "breakage": charts.columns(days, [("Paid credits", "s-paid", a.breakage_paid),
                                          ("Promotional credits", "s-promo", a.breakage_promo)],
                                   width=HALF, height=170),
    }


@bp.get("/")
@require("analytics.view")
def index():
    rng = analytics.Range.parse(request.args)
    price = _price()
    query = urlencode(rng.args())
    if hx_target() == "economics":
        econ = analytics.economics(rng, what_if_price_minor=price)
        return htmx.render("analytics/index.html", "economics", econ=econ, rng=rng, query=query)
    a = analytics.build(rng, what_if_price_minor=price)
    presets = [(n, {"from": (rng.last - timedelta(days=n - 1)).isoformat(),
                    "to": rng.last.isoformat()}) for n in PRESETS]
    refunds_url = url_for("refunds.index") if "refunds.index" in current_app.view_functions else None
    return htmx.render("analytics/index.html", "body_block", a=a, econ=a.economics, rng=rng,
                       charts=_charts(a), presets=presets, query=query, refunds_url=refunds_url)
