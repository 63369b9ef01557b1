"""Customers pages: live search, the customer page (balance, grants, statement, tasks, payments,
refunds) and the adjust form with its htmx update of balance, statement and audit."""
from __future__ import annotations

import re

from models import AuditLog, LedgerEntry, Refund, db
from services.ledger import posting as ledger
from services.tasks import prepaid as tasks


def _rows(html: str) -> int:
    return len(re.findall(r'<a href="/customers/\d+">', html))


# --- search -------------------------------------------------------------------------------------

def test_live_search_by_email_name_and_external_id(login, make):
    make.customer(email="grace@navy.example", name="Grace Hopper", external_id="usr_grace")
    make.customer(email="alan@bletchley.example", name="Alan Turing", external_id="usr_alan")
    staff = login("support")
    for q in ("navy.example", "hopper", "usr_grace", "GRACE"):
        html = staff.htmx(f"/customers/?q={q}").get_data(as_text=True)
        assert "Grace Hopper" in html and "Alan Turing" not in html, q
        assert "<html" not in html  # a fragment for htmx
    page = staff.get("/customers/?q=hopper").get_data(as_text=True)
    assert "<html" in page and 'value="hopper"' in page  # the query stays in the URL and box


def test_search_treats_wildcards_as_text_and_says_so_when_empty(login, make):
    make.customer(email="someone@example.com", name="Some One")
    html = login("support").get("/customers/?q=%25").get_data(as_text=True)
    assert "No customer matches" in html and "Some One" not in html


def test_search_is_keyset_paged_with_load_more(login, make):
    for i in range(27):
        make.customer(email=f"pager{i}@example.com", name=f"Pager {i}")
    staff = login("support")
    first = staff.get("/customers/?q=pager").get_data(as_text=True)
    assert _rows(first) == 25
    after = re.search(r'href="(/customers/\?q=pager&amp;after=\d+)"', first).group(1).replace("&amp;", "&")
    more = staff.htmx(after).get_data(as_text=True)
    assert _rows(more) == 2 and "<table" not in more and "Load more" not in more


def test_low_balance_is_flagged(login, make):
    make.customer(name="Low Lucy", credits=5)
    make.customer(name="Rich Rob", credits=5000)
    html = login("support").get("/customers/").get_data(as_text=True)
    lucy = html[html.index("Low Lucy"):html.index("Low Lucy") + 600]
    rob = html[html.index("Rich Rob"):html.index("Rich Rob") + 600]
    assert ">low</span>" in lucy and ">low</span>" not in rob
    assert "5,000" in rob


# --- detail -------------------------------------------------------------------------------------

def test_detail_shows_balance_grants_statement_tasks_payments_refunds(login, make):
    c = make.customer(name="Ada Lovelace")
    make.grant(c, credits=1200, expires_in_days=10)
    make.grant(c, credits=300, expires_in_days=None)
    ledger.debit(customer_id=c.id, credits=40, feature="image", quantity=8, reference="proj-9")
    make.feature_price(feature="video", credits_per_unit=25)
    task = tasks.create(type="video", customer_id=c.id)
    pay = make.payment(c, amount_minor=123456, currency="USD", credits=5000)
    db.session.add(Refund(payment_id=pay.id, customer_id=c.id, status="requested", credits=100,
                          amount_minor=2500, currency="USD", reason="Wrong pack bought",
                          idempotency_key="rf-test-1"))
    db.session.commit()
    html = login("support").get(f"/customers/{c.id}").get_data(as_text=True)
    assert 'id="balance">1,435<' in html  # 1,500 - 40 - 25
    assert "1,200" in html and "never" in html  # grants and their expiry
    assert "proj-9" in html and "image" in html and "× 8" in html
    assert "1,460" in html  # running balance after the image debit
    assert f"#{task.id}" in html and "video" in html
    assert "$1,234.56" in html and "Wrong pack bought" in html and "$25.00" in html
    assert " UTC" in html


def test_statement_filters_stay_in_links_and_page_by_keyset(login, make):
    c = make.customer(credits=10_000)
    for i in range(30):
        ledger.debit(customer_id=c.id, credits=1 + i, feature="chat" if i % 2 else "image")
    staff = login("support")
    html = staff.get(f"/customers/{c.id}?type=debit&feature=chat").get_data(as_text=True)
    body = html[html.index('id="statement-rows"'):]
    assert body.count('<tr id="entry-') == 15
    assert "image" not in body.split("</tbody>")[0]
    assert 'option value="chat" selected' in html and 'option value="debit" selected' in html

    full = staff.get(f"/customers/{c.id}").get_data(as_text=True)
    link = re.search(r'href="(/customers/\d+\?before=\d+)"', full).group(1)
    older = staff.htmx(link).get_data(as_text=True)
    assert older.count('<tr id="entry-') == 6 and "<table" not in older  # 31 entries, 25 shown first
    ids = [int(x) for x in re.findall(r'<tr id="entry-(\d+)"', full + older)]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 31

    filtered = staff.htmx(f"/customers/{c.id}?type=grant",
                          headers={"HX-Target": "statement-panel"}).get_data(as_text=True)
    assert 'id="statement-panel"' in filtered and "<html" not in filtered
    assert filtered.count('<tr id="entry-') == 1


def test_unknown_customer_is_404_everywhere(login):
    staff = login("admin")
    assert staff.get("/customers/424242").status_code == 404
    assert staff.post("/customers/424242/adjust", data={"credits": 5}).status_code == 404


def test_names_are_escaped(login, make):
    c = make.customer(name='<script>alert(1)</script>', email="x@example.com")
    staff = login("support")
    for url in ("/customers/", f"/customers/{c.id}", "/customers/?q=script"):
        html = staff.get(url).get_data(as_text=True)
        assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)" in html


# --- adjust -------------------------------------------------------------------------------------

def _adjust(staff, c, **kw):
    data = {"direction": "add", "credits": "50", "reason_code": "goodwill",
            "note": "Sorry for the outage", "key": kw.pop("key", None) or ""}
    data.update({k: str(v) for k, v in kw.items()})
    return staff.htmx(f"/customers/{c.id}/adjust", method="POST", data=data)


def test_adjust_updates_balance_statement_and_audit_in_one_htmx_answer(login, make):
    c = make.customer(credits=100)
    staff = login("support")
    resp = _adjust(staff, c, credits=50)
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200 and "<html" not in html
    assert "New balance 150" in html
    # Out-of-band swaps: the balance, the statement and the audit panel all come back.
    assert re.search(r'id="balance-panel"[^>]*hx-swap-oob="true"', html)
    assert re.search(r'id="statement-panel"[^>]*hx-swap-oob="true"', html)
    assert re.search(r'id="activity-panel"[^>]*hx-swap-oob="true"', html)
    assert 'id="balance">150<' in html and "credits.adjust" in html
    entry = db.session.query(LedgerEntry).filter_by(customer_id=c.id, type="adjustment").one()
    assert (entry.amount, entry.actor_type, entry.actor_id) == (50, "staff", str(staff.staff.id))
    assert entry.reason == "Goodwill gesture: Sorry for the outage"
    row = db.session.query(AuditLog).filter_by(action="credits.adjust").one()
    assert row.before == {"balance": 100} and row.after["balance"] == 150
    assert row.target_id == str(c.id) and row.reason == "Sorry for the outage"


def test_adjust_requires_reason_code_and_note(login, make):
    c = make.customer(credits=100)
    staff = login("support")
    html = _adjust(staff, c, reason_code="", note="").get_data(as_text=True)
    assert "Choose a reason code." in html and "Write a short note" in html
    assert 'aria-invalid="true"' in html
    no_js = staff.post(f"/customers/{c.id}/adjust", data={"credits": "5", "direction": "add"})
    assert no_js.status_code == 422 and "<html" in no_js.get_data(as_text=True)
    assert ledger.balance(c.id) == 100
    assert db.session.query(AuditLog).filter_by(action="credits.adjust").count() == 0


def test_adjust_without_javascript_redirects_with_a_message(login, make):
    c = make.customer(credits=10)
    staff = login("support")
    resp = staff.post(f"/customers/{c.id}/adjust", data={
        "direction": "remove", "credits": "4", "reason_code": "billing_error", "note": "double grant"})
    assert resp.status_code == 302 and resp.headers["Location"].endswith(f"/customers/{c.id}")
    page = staff.get(f"/customers/{c.id}").get_data(as_text=True)
    assert "Adjusted by -4 credits. New balance 6." in page
    assert ledger.balance(c.id) == 6


def test_double_submit_of_one_form_applies_once(login, make):
    c = make.customer(credits=10)
    staff = login("support")
    assert _adjust(staff, c, credits=7, key="form-1").status_code == 200
    assert _adjust(staff, c, credits=7, key="form-1").status_code == 200
    assert ledger.balance(c.id) == 17
    assert db.session.query(AuditLog).filter_by(action="credits.adjust").count() == 1


def test_removing_more_than_the_balance_is_refused_unless_an_admin_allows_it(login, make):
    c = make.customer(credits=10)
    support = login("support")
    html = _adjust(support, c, direction="remove", credits=25).get_data(as_text=True)
    assert "Insufficient" in html or "balance" in html.lower()
    assert ledger.balance(c.id) == 10
    assert 'name="allow_negative"' not in html  # support never sees the overdraw switch


def test_admin_may_overdraw_explicitly(login, make):
    c = make.customer(credits=10)
    admin = login("admin")
    assert _adjust(admin, c, direction="remove", credits=25, allow_negative="y").status_code == 200
    assert ledger.balance(c.id) == -15


def test_finance_sees_the_customer_but_cannot_adjust(login, make):
    c = make.customer(credits=10)
    finance = login("finance")
    page = finance.get(f"/customers/{c.id}").get_data(as_text=True)
    assert "Adjust credits" not in page
    assert _adjust(finance, c).status_code == 403
    assert ledger.balance(c.id) == 10


def test_adjust_without_csrf_token_is_refused(login, make):
    c = make.customer(credits=10)
    resp = login("support").post(f"/customers/{c.id}/adjust", csrf=False, data={
        "direction": "add", "credits": "5", "reason_code": "goodwill", "note": "no token"})
    assert resp.status_code == 400
    assert ledger.balance(c.id) == 10
