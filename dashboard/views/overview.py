"""The overview: what a staff member looks at first."""
from __future__ import annotations

from datetime import datetime

from flask import Blueprint, current_app
from flask_login import current_user

from dashboard import htmx
from dashboard.auth import can, require
from models import utcnow
from services.reporting import overview

bp = Blueprint("overview", __name__)


@bp.app_template_global()
def has_endpoint(name: str) -> bool:
    """Whether a page exists yet (areas built by other issues appear when they land)."""
    return name in current_app.view_functions


@bp.app_template_global()
def now_utc() -> datetime:
    return utcnow()


@bp.app_template_filter()
def duration_since(end: datetime | None, start: datetime | None) -> str:
    """4 s, 2 min 5 s, 1 h 20 min."""
    if end is None or start is None:
        return "—"
    secs = max(int((end - start).total_seconds()), 0)
    if secs < 60:
        return f"{secs} s"
    if secs < 3600:
        return f"{secs // 60} min {secs % 60} s"
    return f"{secs // 3600:,} h {secs % 3600 // 60} min"


@bp.get("/")
@require("customers.view")
def index():
    return htmx.render("overview/index.html", None,
                       o=overview.page(webhooks=can(current_user, "webhooks_out.manage")))
