"""The sidebar: one list, filtered by the signed-in user's permissions."""
from __future__ import annotations

from flask import Flask, request
from flask_login import current_user

from dashboard.auth import can
from services.payments import sandbox

# (group, label, endpoint, permission)
NAV = [
    ("Operate", "Overview", "overview.index", "customers.view"),
    ("Operate", "Customers", "customers.index", "customers.view"),
    ("Operate", "Transactions", "transactions.index", "transactions.view"),
    ("Operate", "Tasks", "tasks.index", "tasks.view"),
    ("Operate", "Refunds", "refunds.index", "refunds.request"),
    ("Finance", "Analytics", "analytics.index", "analytics.view"),
    ("Finance", "Reports", "reports.index", "analytics.view"),
    ("Catalogue", "Plans", "plans.index", "plans.manage"),
    ("Catalogue", "Credit packages", "packages.index", "plans.manage"),
    ("Catalogue", "Feature pricing", "pricing.index", "pricing.manage"),
    ("System", "Jobs", "jobs.index", "jobs.view"),
    ("System", "Webhooks", "webhooks.index", "webhooks.view"),
    ("System", "Webhooks out", "webhooks_out.index", "webhooks_out.manage"),
    ("System", "Settings", "settings.index", "settings.manage"),
    ("System", "Staff", "staff.index", "staff.manage"),
    ("System", "API keys", "apikeys.index", "apikeys.manage"),
    ("System", "Audit log", "audit.index", "audit.view"),
    ("System", "Sandbox", "sandbox.index", "sandbox.use"),
    ("System", "Database", "admin.index", "staff.manage"),
]

# Entries that exist only in some set-ups: the sandbox only while a provider is a local double.
SHOWN_WHEN = {"sandbox.index": sandbox.any_available}


def _always() -> bool:
    return True


def items() -> list[dict]:
    """The entries this user may open, the current area marked."""
    area = (request.endpoint or "").split(".")[0]
    return [{"group": group, "label": label, "endpoint": endpoint,
             "active": area == endpoint.split(".")[0]}
            for group, label, endpoint, perm in NAV
            if can(current_user, perm) and SHOWN_WHEN.get(endpoint, _always)()]


def init_app(app: Flask) -> None:
    app.context_processor(lambda: {"nav_items": items})
