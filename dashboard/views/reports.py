"""Reports: the monthly roll-forward of credits (and its CSV), and provider reconciliation."""
from __future__ import annotations

from flask import Blueprint, Response, request
from flask_login import current_user

from dashboard import htmx
from dashboard.auth import require
from dashboard.respond import client_ip
from services.payments import reconcile as payment_reconcile
from services.reporting import export, rollforward

bp = Blueprint("reports", __name__, url_prefix="/reports")
PROBLEMS_SHOWN = 200


def _csv(text: str, filename: str, action: str, details: dict) -> Response:
    export.record(action, staff_id=current_user.id, actor=current_user.email, ip=client_ip(),
                  after=details)
    resp = Response(text, mimetype="text/csv")
    resp.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return resp


@bp.get("/")
@require("analytics.view")
def index():
    period = rollforward.parse_period(request.args.get("month"))
    report = rollforward.build(period)
    return htmx.render("reports/index.html", "report", r=report, periods=rollforward.periods())


@bp.get("/reconciliation")
@require("analytics.view")
def reconciliation():
    """Provider reconciliation: loaded into the reports page by htmx, or a page of its own."""
    return htmx.render("reports/reconciliation.html", "reconciliation",
                       recon=payment_reconcile.run(), shown=PROBLEMS_SHOWN)


@bp.get("/rollforward.csv")
@require("analytics.view")
def rollforward_csv():
    report = rollforward.build(rollforward.parse_period(request.args.get("month")))
    return _csv(rollforward.csv_text(report), f"rollforward-{report.period}.csv",
                "reports.rollforward_export", {"period": report.period, "ok": report.ok})


@bp.get("/reconciliation.csv")
@require("analytics.view")
def reconciliation_csv():
    result = payment_reconcile.run()
    return _csv(payment_reconcile.csv_text(result), "provider-reconciliation.csv",
                "reports.reconciliation_export",
                {"items": len(result.items), "problems": len(result.problems)})
