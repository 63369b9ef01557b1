"""Transactions: the global ledger with filters kept in the URL and keyset paging."""
from __future__ import annotations

import re
from datetime import timedelta

from models import LedgerEntry, db, utcnow
from services.ledger import posting as ledger


def _ids(html: str) -> list[int]:
    return [int(x) for x in re.findall(r'<tr id="tx-(\d+)"', html)]


def test_lists_every_customers_entries_newest_first(login, make):
    a = make.customer(name="Alice A", credits=100)
    make.customer(name="Bob B", credits=200)
    ledger.debit(customer_id=a.id, credits=7, feature="chat", reference="proj-1")
    html = login("finance").get("/transactions/").get_data(as_text=True)
    assert "Alice A" in html and "Bob B" in html and "proj-1" in html
    ids = _ids(html)
    assert len(ids) == 3 and ids == sorted(ids, reverse=True)
    assert "−7" in html and " UTC" in html


def test_filters_by_customer_type_feature_reference_and_dates(login, make):
    a = make.customer(email="alice@example.com", external_id="usr_alice", credits=100)
    b = make.customer(credits=100)
    ledger.debit(customer_id=a.id, credits=3, feature="chat", reference="r-1")
    ledger.debit(customer_id=a.id, credits=4, feature="image", reference="r-2")
    ledger.debit(customer_id=b.id, credits=5, feature="chat", reference="r-1")
    staff = login("finance")

    def ids(query: str) -> set[int]:
        return set(_ids(staff.get(f"/transactions/?{query}").get_data(as_text=True)))

    by = {(e.customer_id, e.type, e.feature): e.id for e in db.session.query(LedgerEntry)}
    assert ids("customer=usr_alice") == {by[(a.id, "grant", None)], by[(a.id, "debit", "chat")],
                                         by[(a.id, "debit", "image")]}
    assert ids("customer=ALICE@example.com&type=debit") == {by[(a.id, "debit", "chat")],
                                                            by[(a.id, "debit", "image")]}
    assert ids(f"customer={b.id}&type=debit") == {by[(b.id, "debit", "chat")]}
    assert ids("feature=chat") == {by[(a.id, "debit", "chat")], by[(b.id, "debit", "chat")]}
    assert ids("reference=r-1&type=debit") == {by[(a.id, "debit", "chat")], by[(b.id, "debit", "chat")]}
    today = utcnow().date()
    assert len(ids(f"from={today}&to={today}")) == 5
    assert ids(f"from={today + timedelta(days=1)}") == set()
    assert ids(f"to={today - timedelta(days=1)}") == set()


def test_bad_filters_are_explained_not_an_error(login, make):
    make.customer(credits=10)
    staff = login("finance")
    html = staff.get("/transactions/?from=yesterday&type=bogus&customer=nobody@example.com") \
        .get_data(as_text=True)
    assert "not a date" in html and "Unknown entry type" in html
    assert "No customer has the id, external id or email" in html


def test_keyset_paging_keeps_the_filters(login, make):
    c = make.customer(credits=10_000)
    for _ in range(55):
        ledger.debit(customer_id=c.id, credits=1, feature="chat", reference="bulk")
    staff = login("finance")
    first = staff.get("/transactions/?reference=bulk").get_data(as_text=True)
    assert len(_ids(first)) == 50
    link = re.search(r'hx-get="(/transactions/\?before=\d+[^"]*)"', first).group(1).replace("&amp;", "&")
    assert "reference=bulk" in link
    more = staff.htmx(link).get_data(as_text=True)
    assert len(_ids(more)) == 5 and "<table" not in more
    assert set(_ids(first)).isdisjoint(_ids(more))


def test_filter_form_answers_the_results_fragment(login, make):
    make.customer(credits=10)
    html = login("finance").htmx("/transactions/?type=grant", headers={"HX-Target": "results"}) \
        .get_data(as_text=True)
    assert "<html" not in html and "<table" in html and 'id="tx-' in html


def test_empty_ledger_and_no_match_say_so(login, make):
    staff = login("finance")
    assert "The ledger is empty" in staff.get("/transactions/").get_data(as_text=True)
    make.customer(credits=10)
    assert "No entries match these filters" in staff.get("/transactions/?type=expiry").get_data(as_text=True)


def test_export_link_keeps_the_filters(login, make):
    html = login("finance").get("/transactions/?type=debit&from=2026-01-01").get_data(as_text=True)
    link = re.search(r'href="(/transactions/export\.csv[^"]*)"', html)
    assert link and "type=debit" in link.group(1) and "from=2026-01-01" in link.group(1)


def test_support_has_no_transactions_page(login):
    assert login("support").get("/transactions/").status_code == 403
