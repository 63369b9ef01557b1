"""Transactions: the global ledger with filters kept in the URL, keyset-paged."""
from __future__ import annotations

from urllib.parse import urlencode

from flask import Blueprint, request, url_for

from dashboard import htmx
from dashboard.auth import require
from dashboard.respond import hx_target, int_arg
from models.ledger import ENTRY_TYPES
from services.reporting import transactions

bp = Blueprint("transactions", __name__, url_prefix="/transactions")
PAGE = 50


@bp.get("/")
@require("transactions.view")
def index():
    filters = transactions.Filters.parse(request.args)
    before = int_arg("before")
    page = transactions.page(filters, before_id=before, limit=PAGE)
    query = urlencode(filters.args())
    ctx = dict(p=page, f=filters, before=before, entry_types=ENTRY_TYPES,
               features=transactions.feature_names(), query=query,
               export_url=url_for("exports.transactions_csv", **filters.args()))
    if htmx.is_htmx() and before:
        return htmx.render("transactions/index.html", "rows", **ctx)
    if hx_target() == "results":
        return htmx.render("transactions/index.html", "results", **ctx)
    return htmx.render("transactions/index.html", None, **ctx)
