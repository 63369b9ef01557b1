"""Tasks: by status with counts and paging, detail with logs and entries, retry (charges the
estimate again through the ledger) and cancel-with-refund, each audited."""
from __future__ import annotations

import re

import pytest

from models import AuditLog, LedgerEntry, Task, db
from services.core.errors import Conflict, InsufficientCredits
from services.ledger import posting as ledger
from services.ledger.rules import Actor
from services.tasks import prepaid as tasks


def _task(c, credits=30, type="video", **kw):
    return tasks.create(type=type, customer_id=c.id, estimated_credits=credits, **kw)


def test_list_by_status_with_counts(login, make):
    c = make.customer(credits=1000)
    done = _task(c)
    tasks.complete(task_id=done.id, actual_credits=20)
    failed = _task(c, type="image")
    tasks.fail(task_id=failed.id, error="provider down")
    _task(c, type="chat")
    staff = login("support")
    html = staff.get("/tasks/").get_data(as_text=True)
    assert re.search(r"Failed<span class=\"count\">1<", html)
    assert re.search(r"Pending<span class=\"count\">1<", html)
    assert re.search(r"All<span class=\"count\">3<", html)
    only_failed = staff.get("/tasks/?status=failed").get_data(as_text=True)
    assert f'href="/tasks/{failed.id}"' in only_failed and f'href="/tasks/{done.id}"' not in only_failed
    by_type = staff.get("/tasks/?type=chat").get_data(as_text=True)
    assert len(re.findall(r'href="/tasks/\d+"', by_type)) == 1


def test_tasks_are_keyset_paged(login, make):
    c = make.customer(credits=10_000)
    for _ in range(53):
        _task(c, credits=1)
    staff = login("support")
    first = staff.get("/tasks/").get_data(as_text=True)
    link = re.search(r'hx-get="(/tasks/\?before=\d+[^"]*)"', first).group(1).replace("&amp;", "&")
    more = staff.htmx(link).get_data(as_text=True)
    assert "<table" not in more and len(re.findall(r'href="/tasks/\d+"', more)) == 3


def test_detail_shows_logs_entries_input_and_escapes(login, make):
    c = make.customer(credits=100)
    t = _task(c, input={"prompt": "<script>alert(1)</script>"})
    tasks.fail(task_id=t.id, error="<b>provider</b> timeout")
    html = login("support").get(f"/tasks/{t.id}").get_data(as_text=True)
    assert "task created, estimate charged" in html and "task failed, estimate refunded" in html
    assert "<script>alert(1)" not in html and "<b>provider</b>" not in html
    assert "&lt;b&gt;provider&lt;/b&gt; timeout" in html
    assert html.count('class="badge') >= 2 and "Retry" not in html  # support may not retry


def test_unknown_task_is_404(login):
    assert login("support").get("/tasks/999999").status_code == 404


def test_retry_charges_the_estimate_again_and_settles_once_more(make):
    c = make.customer(credits=100)
    t = _task(c, credits=30)
    first_charge = t.charge_entry_id
    tasks.fail(task_id=t.id, error="provider down")
    assert ledger.balance(c.id) == 100
    admin = make.staff(role="admin")
    again = tasks.retry(task_id=t.id, actor=Actor.of_staff(admin), staff=admin)
    assert (again.status, again.attempts, again.charged_credits, again.refunded_credits) == \
        ("pending", 1, 30, 0)
    assert ledger.balance(c.id) == 70 and again.charge_entry_id != first_charge
    # The second run settles through its own charge: 10 of 30 used, 20 refunded.
    tasks.complete(task_id=t.id, actual_credits=10)
    assert ledger.balance(c.id) == 90
    entries = db.session.query(LedgerEntry).filter_by(task_id=t.id).order_by(LedgerEntry.id).all()
    assert [(e.type, e.amount) for e in entries] == [("debit", -30), ("refund", 30), ("debit", -30),
                                                      ("refund", 20)]
    assert db.session.query(AuditLog).filter_by(action="tasks.retry").one().after["attempts"] == 1
    with pytest.raises(Conflict):
        tasks.retry(task_id=t.id, staff=admin)


def test_retry_needs_the_credits(make):
    c = make.customer(credits=30)
    t = _task(c, credits=30)
    tasks.cancel(task_id=t.id, reason="test")
    ledger.debit(customer_id=c.id, credits=25, feature="chat")
    with pytest.raises(InsufficientCredits):
        tasks.retry(task_id=t.id)
    db.session.expire_all()
    assert db.session.get(Task, t.id).status == "cancelled" and ledger.balance(c.id) == 5


def test_retry_and_cancel_through_the_page(login, make):
    c = make.customer(credits=100)
    failed = _task(c, credits=30)
    tasks.fail(task_id=failed.id, error="x")
    running = _task(c, credits=20)
    admin = login("admin")
    page = admin.get(f"/tasks/{failed.id}").get_data(as_text=True)
    assert ">Retry<" in page and "Cancel and refund" not in page
    resp = admin.post(f"/tasks/{failed.id}/retry")
    assert resp.status_code == 303
    assert "pending again; 30 credits charged" in admin.get(f"/tasks/{failed.id}").get_data(as_text=True)
    assert ledger.balance(c.id) == 50

    confirm = admin.htmx(f"/tasks/{running.id}/cancel").get_data(as_text=True)
    assert "<html" not in confirm and "20 credits charged for it go back" in confirm
    assert admin.post(f"/tasks/{running.id}/cancel", data={"reason": ""}).status_code == 422
    resp = admin.post(f"/tasks/{running.id}/cancel", data={"reason": "customer asked"})
    assert resp.status_code == 303
    assert ledger.balance(c.id) == 70
    row = db.session.query(AuditLog).filter_by(action="tasks.cancel").one()
    assert row.reason == "customer asked" and row.after["refunded_credits"] == 20
    again = admin.post(f"/tasks/{running.id}/cancel", data={"reason": "twice"})
    assert again.status_code == 409 and ledger.balance(c.id) == 70


def test_support_reads_tasks_but_cannot_move_money(login, make):
    c = make.customer(credits=100)
    t = _task(c)
    support = login("support")
    assert support.get(f"/tasks/{t.id}").status_code == 200
    assert support.post(f"/tasks/{t.id}/cancel", data={"reason": "nope"}).status_code == 403
    assert support.post(f"/tasks/{t.id}/retry").status_code == 403
    assert ledger.balance(c.id) == 70
