"""Dashboard blueprints, one per area, registered in the order of this list."""
from __future__ import annotations

from flask import Flask

from dashboard import nav
from dashboard.views import (
    account,
    analytics,
    apikeys,
    audit,
    autotopup,
    customers,
    exports,
    jobs,
    overview,
    packages,
    plans,
    pricing,
    refunds,
    reports,
    sandbox,
    settings,
    staff,
    tasks,
    transactions,
    webhooks,
    webhooks_out,
)

AREAS = (overview, customers, autotopup, transactions, exports, tasks, refunds, analytics, reports,
         plans, packages, pricing, jobs, webhooks, webhooks_out, settings, staff, apikeys, audit,
         sandbox, account)


def init_app(app: Flask) -> None:
    nav.init_app(app)
    for area in AREAS:
        app.register_blueprint(area.bp)
