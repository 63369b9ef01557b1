"""Maker-checker credit adjustments: support adjusts up to the limit, larger ones wait for an
admin who is not the requester; every step is audited; nothing moves until approval."""
from __future__ import annotations

import pytest

from models import AdjustmentRequest, AuditLog, LedgerEntry, db
from services.core import settings as app_settings
from services.core.errors import Conflict, Forbidden, InsufficientCredits, ValidationFailed
from services.ledger import posting as ledger
from services.staff import adjustments


def _submit(staff, c, credits, **kw):
    return adjustments.submit(customer_id=c.id, credits=credits, reason_code=kw.pop("code", "goodwill"),
                              note=kw.pop("note", "outage on 3 May"), staff=staff, **kw)


def test_support_within_the_limit_adjusts_at_once(make):
    c = make.customer(credits=100)
    support = make.staff(role="support")
    out = _submit(support, c, 500)  # the default limit is 500
    assert not out.pending and out.entry.amount == 500
    assert ledger.balance(c.id) == 600
    out = _submit(support, c, -500)
    assert ledger.balance(c.id) == 100


def test_support_above_the_limit_files_a_request_and_nothing_moves(make):
    c = make.customer(credits=100)
    support = make.staff(role="support")
    out = _submit(support, c, 501)
    assert out.pending and out.request.status == "pending" and out.request.credits == 501
    assert ledger.balance(c.id) == 100
    assert db.session.query(LedgerEntry).filter_by(type="adjustment").count() == 0
    row = db.session.query(AuditLog).filter_by(action="credits.adjust_requested").one()
    assert row.after["credits"] == 501 and row.after["limit"] == 500
    # A removal above the limit needs approval too.
    assert _submit(support, c, -600).pending


def test_the_limit_is_the_setting(make):
    c = make.customer(credits=100)
    support = make.staff(role="support")
    app_settings.update(key="support_adjustment_limit", value=10, staff=make.staff(role="admin"))
    assert _submit(support, c, 11).pending
    assert not _submit(support, c, 10).pending


def test_admins_adjust_without_a_limit(make):
    c = make.customer()
    out = _submit(make.staff(role="admin"), c, 1_000_000)
    assert not out.pending and ledger.balance(c.id) == 1_000_000


def test_an_admin_who_did_not_ask_approves_and_the_credits_move_once(make):
    c = make.customer(credits=100)
    support, admin = make.staff(role="support"), make.staff(role="admin")
    req = _submit(support, c, 2000).request
    done = adjustments.approve(request_id=req.id, staff=admin, ip="10.0.0.9")
    assert done.status == "approved" and done.decided_by_id == admin.id and done.entry_id
    assert ledger.balance(c.id) == 2100
    entry = db.session.get(LedgerEntry, done.entry_id)
    assert (entry.actor_type, entry.actor_id, entry.amount) == ("staff", str(admin.id), 2000)
    audit = db.session.query(AuditLog).filter_by(action="credits.adjust_approved").one()
    assert audit.before == {"balance": 100} and audit.after["balance"] == 2100
    assert audit.after["requested_by"] == support.id and audit.ip == "10.0.0.9"
    with pytest.raises(Conflict):
        adjustments.approve(request_id=req.id, staff=make.staff(role="admin"))
    assert ledger.balance(c.id) == 2100


def test_support_cannot_decide_and_nobody_decides_their_own_request(make):
    c = make.customer(credits=100)
    support = make.staff(role="support")
    req = _submit(support, c, 900).request
    with pytest.raises(Forbidden):
        adjustments.approve(request_id=req.id, staff=make.staff(role="support"))
    support.role = "admin"  # promoted meanwhile: still not the second person
    db.session.commit()
    with pytest.raises(Forbidden):
        adjustments.approve(request_id=req.id, staff=support)
    with pytest.raises(Forbidden):
        adjustments.reject(request_id=req.id, staff=support)
    assert db.session.get(AdjustmentRequest, req.id).status == "pending"


def test_reject_moves_nothing_and_is_audited(make):
    c = make.customer(credits=100)
    req = _submit(make.staff(role="support"), c, 900).request
    done = adjustments.reject(request_id=req.id, staff=make.staff(role="admin"), note="not justified")
    assert done.status == "rejected" and done.entry_id is None
    assert ledger.balance(c.id) == 100
    row = db.session.query(AuditLog).filter_by(action="credits.adjust_rejected").one()
    assert row.reason == "not justified"
    with pytest.raises(Conflict):
        adjustments.approve(request_id=req.id, staff=make.staff(role="admin"))


def test_an_approval_that_would_overdraw_fails_and_the_request_stays_pending(make):
    c = make.customer(credits=1000)
    req = _submit(make.staff(role="support"), c, -900).request
    ledger.debit(customer_id=c.id, credits=500, feature="chat")
    with pytest.raises(InsufficientCredits):
        adjustments.approve(request_id=req.id, staff=make.staff(role="admin"))
    db.session.expire_all()
    assert db.session.get(AdjustmentRequest, req.id).status == "pending"
    assert ledger.balance(c.id) == 500


@pytest.mark.parametrize("credits, code, note", [(0, "goodwill", "note"), (5, "", "note"),
                                                 (5, "bogus", "note"), (5, "goodwill", " ")])
def test_invalid_adjustments_are_refused(make, credits, code, note):
    c = make.customer(credits=10)
    with pytest.raises(ValidationFailed):
        _submit(make.staff(role="support"), c, credits, code=code, note=note)
    assert ledger.balance(c.id) == 10


def test_only_admins_may_overdraw(make):
    c = make.customer(credits=10)
    with pytest.raises(Forbidden):
        _submit(make.staff(role="support"), c, -20, allow_negative=True)
    _submit(make.staff(role="admin"), c, -20, allow_negative=True)
    assert ledger.balance(c.id) == -10


# --- through the pages ----------------------------------------------------------------------------

def test_support_request_shows_on_the_overview_and_an_admin_approves_it_with_htmx(login, make):
    c = make.customer(name="Big Spender", credits=100)
    support = login("support")
    html = support.htmx(f"/customers/{c.id}/adjust", method="POST", data={
        "direction": "add", "credits": "5000", "reason_code": "service_issue",
        "note": "week-long outage", "key": "k-big"}).get_data(as_text=True)
    assert "sent to an admin for approval" in html and 'id="balance">100<' in html
    assert "Waiting for an admin" in html
    assert "Approve" not in support.get("/").get_data(as_text=True)
    req = db.session.query(AdjustmentRequest).one()
    assert support.post(f"/customers/adjustments/{req.id}/approve").status_code == 403

    admin = login("admin")
    overview = admin.get("/").get_data(as_text=True)
    assert "Big Spender" in overview and "week-long outage" in overview and ">Approve<" in overview
    row = admin.htmx(f"/customers/adjustments/{req.id}/approve", method="POST",
                     data={"origin": "overview"}).get_data(as_text=True)
    assert f'id="adj-request-{req.id}"' in row and "approved" in row and "<html" not in row
    assert ledger.balance(c.id) == 5100
    assert "Nothing is waiting" in admin.get("/").get_data(as_text=True)


def test_approving_on_the_customer_page_refreshes_balance_and_statement(login, make):
    c = make.customer(credits=100)
    req = _submit(make.staff(role="support"), c, 800).request
    admin = login("admin")
    assert "Adjustments waiting for approval" in admin.get(f"/customers/{c.id}").get_data(as_text=True)
    html = admin.htmx(f"/customers/adjustments/{req.id}/approve", method="POST",
                      data={"origin": "customer"}).get_data(as_text=True)
    assert 'id="balance">900<' in html and 'hx-swap-oob="true"' in html
    assert "credits.adjust_approved" in html


def test_reject_without_javascript_redirects_back(login, make):
    c = make.customer(credits=100)
    req = _submit(make.staff(role="support"), c, 800).request
    admin = login("admin")
    resp = admin.post(f"/customers/adjustments/{req.id}/reject", data={"next": f"/customers/{c.id}"})
    assert resp.status_code == 302 and resp.headers["Location"].endswith(f"/customers/{c.id}")
    resp = admin.post(f"/customers/adjustments/{req.id}/reject", data={"next": "https://evil.example/"})
    assert resp.headers["Location"] == "/"  # already rejected; and never an open redirect
    assert db.session.get(AdjustmentRequest, req.id).status == "rejected"
