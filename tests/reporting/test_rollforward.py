"""Roll-forward: the identity holds for every month of the demo data and reconciles to the ledger."""
from __future__ import annotations

import csv
import io
from fractions import Fraction

from sqlalchemy import func, select

from models import AuditLog, LedgerEntry, db
from services.demo import dataset as demo
from services.reporting import rollforward


def _lines(g):
    return (g.cls, g.currency, {k: v for k, v in g.credits.items() if v},
            {k: v for k, v in g.value.items() if v})


def test_identity_holds_for_every_month_of_the_demo_data(app):
    stats = demo.load(customers=200, months=6)
    assert stats["entries"] > 10_000
    periods = rollforward.periods()[::-1]  # oldest first
    assert len(periods) >= 7  # six whole months back and the current one
    previous: dict[tuple[str, str], tuple[int, Fraction]] = {}
    seen = {"purchased": 0, "granted": 0, "spent": 0, "returned": 0, "adjusted": 0,
            "expired": 0, "refunded": 0}
    for period in periods:
        report = rollforward.build(period)
        # Read from the first entry forward or from today's buckets backward: the same report.
        forward, backward = (rollforward.build(period, direction=d) for d in ("start", "end"))
        assert [_lines(g) for g in forward.groups] == [_lines(g) for g in backward.groups], period
        assert [(c.name, c.expected) for c in forward.checks] == \
            [(c.name, c.expected) for c in backward.checks], period
        failed = [(c.name, c.expected, c.actual) for c in report.checks if not c.ok]
        assert failed == [], period
        for g in report.groups:
            key = (g.cls, g.currency)
            flows = sum(g.credits[k] for k in rollforward.FLOWS)
            assert g.credits["opening"] + flows == g.closing, (period, key)
            exact = g.value["opening"] + sum((g.value[k] for k in rollforward.FLOWS), Fraction(0))
            assert exact == g.closing_value, (period, key)
            assert g.credits["other"] == 0
            rows = g.rows()
            assert sum(r["value_minor"] for r in rows[:-1]) == rows[-1]["value_minor"] \
                == round(g.closing_value), (period, key)
            # This month opens where the previous one closed, in credits and in value.
            assert (g.credits["opening"], g.value["opening"]) == previous.get(key, (0, Fraction(0))), \
                (period, key)
            previous[key] = (g.closing, g.closing_value)
            for k in seen:
                seen[k] += abs(g.credits[k])
            if g.cls == "promotional":
                assert g.closing_value == 0  # promotional credits carry no money
        # The months chain: the closing of all groups is the ledger's total before the month's end.
        _start, end = rollforward.month_bounds(period)
        total = db.session.scalar(select(func.coalesce(func.sum(LedgerEntry.amount), 0))
                                  .where(LedgerEntry.created_at < end))
        assert report.total("closing") == total
    assert all(seen.values()), seen  # every line is exercised by the demo data
    # The current month's closing value is the unused credits of the buckets at their cost.
    now = rollforward.build(periods[-1])
    buckets = rollforward.remaining_value_now()
    for g in now.groups:
        assert g.closing_value == buckets.get((g.cls, g.currency), Fraction(0)), (g.cls, g.currency)
    assert {c.name for c in now.checks} >= {"closing = sum of account balances now",
                                            "closing paid = unused credits in paid buckets now"}


def test_report_page_and_csv(login, make, app):
    demo.load(customers=20, months=2)
    finance = login("finance")
    period = rollforward.periods()[1]
    html = finance.get(f"/reports/?month={period}").get_data(as_text=True)
    assert f"Roll-forward {period}" in html and "reconciles with the ledger" in html
    assert 'hx-get="/reports/reconciliation"' in html  # loaded after the roll-forward
    recon = finance.htmx("/reports/reconciliation").get_data(as_text=True)
    assert "<html" not in recon and "Provider reconciliation" in recon and "everything matches" in recon
    assert "<html" in finance.get("/reports/reconciliation").get_data(as_text=True)
    frag = finance.htmx(f"/reports/?month={period}").get_data(as_text=True)
    assert "<html" not in frag and "Closing balance" in frag
    resp = finance.get(f"/reports/rollforward.csv?month={period}")
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(resp.get_data(as_text=True), newline="")))
    report = rollforward.build(period)
    for g in report.groups:
        mine = [r for r in rows if r["credit_class"] == g.cls and r["currency"] == g.currency]
        assert [(r["line"], int(r["credits"]), int(r["value_minor"])) for r in mine] == \
            [(r["line"], r["credits"], r["value_minor"]) for r in g.rows()]
    checks = [r for r in rows if r["credit_class"] == "check"]
    assert checks and all(r["line"] == "ok" and r["credits"] == r["ledger_credits"] for r in checks)
    audit = db.session.scalars(select(AuditLog).where(AuditLog.action == "reports.rollforward_export")).one()
    assert audit.after == {"period": period, "ok": True} and audit.staff_id == finance.staff.id
    assert login("support").get("/reports/").status_code == 403
    assert login("support").get("/reports/rollforward.csv").status_code == 403


def test_a_month_without_movements_and_a_bad_month(login, app):
    finance = login("finance")
    html = finance.get("/reports/?month=1999-01").get_data(as_text=True)
    assert "Roll-forward 1999-01" in html and "no movement" in html
    assert rollforward.parse_period("13/2020") == rollforward.parse_period(None)
    assert finance.get("/reports/?month=not-a-month").status_code == 200
