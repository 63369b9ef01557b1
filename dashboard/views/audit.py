"""Audit log: every staff action with actor, IP, before/after and reason; filterable, keyset paged."""
from __future__ import annotations

from flask import Blueprint, abort

from dashboard import htmx
from dashboard.auth import require
from dashboard.respond import date_arg, int_arg, list_page, str_arg
from services.core import auditlog

bp = Blueprint("audit", __name__, url_prefix="/audit")
PAGE = 50


def _filter() -> auditlog.AuditFilter:
    return auditlog.AuditFilter(actor=str_arg("actor", 320), action=str_arg("action", 64),
                                target_type=str_arg("target_type", 32),
                                target_id=str_arg("target_id", 64),
                                since=date_arg("since"), until=date_arg("until"))


@bp.get("/")
@require("audit.view")
def index():
    f, before = _filter(), int_arg("before")
    page = auditlog.search(f, before_id=before, limit=PAGE)
    return list_page("audit/index.html", before, f=f, rows=page.rows, next_before=page.next_before,
                     actions=auditlog.actions(), target_types=auditlog.target_types())


@bp.get("/<int:row_id>")
@require("audit.view")
def detail(row_id: int):
    return htmx.render("audit/detail.html", "detail", row=auditlog.get(row_id) or abort(404))
