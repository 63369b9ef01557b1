"""The overview: KPIs with trends from the ledger, last job runs, ledger health from the last
reconcile_ledger run, and what waits for approval."""
from __future__ import annotations

import re
from datetime import timedelta

from models import JobRun, Refund, db, utcnow
from services.ledger import posting as ledger
from services.reporting import overview
from services.staff import adjustments
from services.tasks import prepaid as tasks


def test_kpis_come_from_the_ledger_payments_and_tasks(make):
    c = make.customer(credits=1500)
    ledger.debit(customer_id=c.id, credits=234, feature="chat")
    make.payment(c, amount_minor=4900, currency="USD")
    make.payment(c, amount_minor=10000, currency="INR")
    t = tasks.create(type="video", customer_id=c.id, estimated_credits=10)
    tasks.fail(task_id=t.id, error="provider down")
    k = overview.kpis()
    assert k.outstanding == 1266 and k.customers == 1
    assert k.granted_30d == 1500 and k.granted_today == 1500
    assert k.spent_30d == 234 and k.spent_today == 234  # the failed task's charge came back
    assert k.revenue_30d == [("USD", 4900), ("INR", 10000)]  # currencies never added up
    assert k.failed_tasks_30d == 1 and k.failed_tasks_today == 1
    assert len(k.spent_daily) == 30 and k.spent_daily[-1] == 234


def test_overview_page_shows_figures_and_trends_without_inline_styles(login, make):
    c = make.customer(credits=12_345)
    ledger.debit(customer_id=c.id, credits=1_000, feature="chat")
    make.payment(c, amount_minor=123_456)
    html = login("support").get("/").get_data(as_text=True)
    assert "11,345" in html and "12,345" in html and "$1,234.56" in html
    assert html.count('<svg class="trend"') >= 3
    assert "style=" not in html.split("<body", 1)[1]  # CSP: style-src 'self', no inline styles
    assert " UTC" in html


def test_empty_overview_explains_itself(login):
    html = login("support").get("/").get_data(as_text=True)
    assert "No job has run yet" in html
    assert "not checked yet" in html
    assert "Nothing is waiting" in html
    assert "no payments in this period" in html


def test_last_job_runs_are_listed_newest_first(login, make):
    now = utcnow()
    db.session.add_all([
        JobRun(job="expire_credits", period="2026-11-01T10", status="succeeded",
               started_at=now - timedelta(hours=2),
               finished_at=now - timedelta(hours=2) + timedelta(seconds=3), processed_count=1234),
        JobRun(job="distribute_credits", period="2026-11", status="failed",
               started_at=now - timedelta(hours=1),
               finished_at=now - timedelta(minutes=58), processed_count=10, error_count=2, error="boom"),
    ])
    db.session.commit()
    html = login("support").get("/").get_data(as_text=True)
    runs = html[html.index('id="runs-title"'):]
    assert runs.index("distribute_credits") < runs.index("expire_credits")
    assert "1,234" in runs and "3 s" in runs and "2 min 0 s" in runs
    assert 'class="badge bad">failed' in runs


def test_ledger_health_reads_the_last_reconcile_run(login, make):
    now = utcnow()
    db.session.add(JobRun(job="reconcile_ledger", period="2026-11-20", status="succeeded",
                          started_at=now - timedelta(days=1), finished_at=now - timedelta(days=1),
                          details={"ok": True, "accounts": 1000, "entries": 104_233, "checks": []}))
    db.session.commit()
    staff = login("support")
    html = staff.get("/").get_data(as_text=True)
    assert "consistent" in html and "104,233" in html and "All invariants hold" in html

    db.session.add(JobRun(job="reconcile_ledger", period="2026-11-21", status="succeeded",
                          started_at=now, finished_at=now,
                          details={"ok": False, "accounts": 1000, "entries": 104_300, "checks": [
                              {"name": "balance_vs_entries", "ok": False, "violations": 3, "samples": []},
                              {"name": "entry_allocations", "ok": True, "violations": 0, "samples": []}]}))
    db.session.commit()
    html = staff.get("/").get_data(as_text=True)
    assert "needs attention" in html and "balance_vs_entries" in html
    assert "entry_allocations" not in html


def test_stale_reconcile_is_flagged(make):
    old = utcnow() - timedelta(days=5)
    db.session.add(JobRun(job="reconcile_ledger", period="old", status="succeeded", started_at=old,
                          finished_at=old, details={"ok": True}))
    db.session.commit()
    h = overview.ledger_health()
    assert h.ok is True and h.stale is True


def test_pending_approvals_list_adjustments_and_refund_requests(login, make):
    c = make.customer(name="Waiting Wanda", credits=100)
    adjustments.submit(customer_id=c.id, credits=9000, reason_code="billing_error",
                       note="charged twice", staff=make.staff(role="support"))
    pay = make.payment(c, amount_minor=2500)
    db.session.add(Refund(payment_id=pay.id, customer_id=c.id, status="requested", credits=250,
                          amount_minor=2500, currency="USD", reason="Did not use it",
                          idempotency_key="rf-overview"))
    db.session.commit()
    html = login("admin").get("/").get_data(as_text=True)
    assert "Waiting Wanda" in html and "+9,000" in html and "charged twice" in html
    assert "Did not use it" in html and "$25.00" in html
    assert re.search(r"1 adjustment · 1 refund", html)
