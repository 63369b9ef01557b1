"""The sidebar: one list, filtered by the signed-in user's permissions."""
from __future__ import annotations

from flask import Flask, current_app, request
from flask_login import current_user

from dashboard.auth import can

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
    ("System", "Settings", "settings.index", "settings.manage"),
    ("System", "Staff", "staff.index", "staff.manage"),
    ("System", "API keys", "apikeys.index", "apikeys.manage"),
    ("System", "Audit log", "audit.index", "audit.view"),
    ("System", "Database", "admin.index", "staff.manage"),
]


def items() -> list[dict]:
    """Visible entries; areas not built yet show as a muted slot."""
    out = []
    current = request.endpoint or ""
    for group, label, endpoint, perm in NAV:
        if not can(current_user, perm):
            continue
        exists = endpoint in current_app.view_functions
        area = endpoint.split(".")[0]
        out.append({"group": group, "label": label, "endpoint": endpoint if exists else None,
                    "active": exists and current.split(".")[0] == area})
    return out


def init_app(app: Flask) -> None:
    app.context_processor(lambda: {"nav_items": items})
