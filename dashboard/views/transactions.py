"""Transactions: the global ledger with filters kept in the URL, keyset-paged."""
from __future__ import annotations

from urllib.parse import urlencode

from flask import Blueprint, request, url_for

from dashboard.auth import require
from dashboard.respond import int_arg, list_page
from models.ledger import ENTRY_TYPES
from services.reporting import transactions

bp = Blueprint("transactions", __name__, url_prefix="/transactions")
PAGE = 50


@bp.get("/")
@require("transactions.view")
def index():
    filters = transactions.Filters.parse(request.args)
    before = int_arg("before")
    return list_page("transactions/index.html", before, target="results", f=filters, before=before,
                     p=transactions.page(filters, before_id=before, limit=PAGE),
                     entry_types=ENTRY_TYPES, features=transactions.feature_names(),
                     query=urlencode(filters.args()),
                     export_url=url_for("exports.transactions_csv", **filters.args()))
