"""Customers: live search, and a customer's balance, grants and ledger."""
from flask import Blueprint, request

from dashboard import htmx
from dashboard.auth import require
from services import customers, ledger

bp = Blueprint("customers", __name__, url_prefix="/customers")
PAGE = 25


def _int_arg(name: str) -> int | None:
    raw = request.args.get(name, "")
    return int(raw) if raw.isdigit() else None


@bp.get("/")
@require("customers.view")
def index():
    q = request.args.get("q", "").strip()[:200]
    after = _int_arg("after")
    rows = customers.search(q=q, limit=PAGE + 1, after_id=after)
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    block = "rows" if after else "results"
    return htmx.render("customers/index.html", block, q=q, customers=rows, more=more,
                       next_after=rows[-1].id if rows else None)


@bp.get("/<int:customer_id>")
@require("customers.view")
def detail(customer_id: int):
    customer = customers.get(customer_id)
    before = _int_arg("before")
    entries = ledger.entries_page(customer_id=customer_id, before_id=before, limit=PAGE + 1)
    more = len(entries) > PAGE
    entries = entries[:PAGE]
    ctx = dict(customer=customer, entries=entries, more=more,
               next_before=entries[-1].id if entries else None)
    if before and htmx.is_htmx():
        return htmx.render("customers/detail.html", "ledger_rows", **ctx)
    return htmx.render("customers/detail.html", None, grants=ledger.live_grants(customer_id), **ctx)
