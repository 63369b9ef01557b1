"""CSV export of the transactions page: neutralised cells, exact filters, audit, bounded memory."""
from __future__ import annotations

import csv
import io
import random
import re
import tracemalloc
from datetime import timedelta

import pytest
from sqlalchemy import select

from bench import ledger_data
from models import AuditLog, Customer, LedgerEntry, db, utcnow
from services.core import csvsafe
from services.ledger import posting as ledger
from services.reporting import export, transactions
from services.reporting.transactions import Filters

DANGEROUS = ["=1+2", "+SUM(A1:A9)", "-2+3", "@cmd", "\tTAB", "\rCR", "\nLF", "'quoted"]
TEXT_COLUMNS = [name for name, kind, _c in export.COLUMNS if kind == "text"]
NUMBER_COLUMNS = [name for name, kind, _c in export.COLUMNS if kind == "number"]


def parse(body: str) -> list[dict]:
    rows = list(csv.reader(io.StringIO(body, newline="")))
    assert rows[0] == export.HEADER
    return [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]


def get_csv(staff, query: str = "") -> tuple[str, list[dict]]:
    resp = staff.get(f"/transactions/export.csv{query}")
    assert resp.status_code == 200, resp.get_data(as_text=True)[:300]
    assert resp.mimetype == "text/csv" and resp.mimetype_params.get("charset") == "utf-8"
    assert "attachment" in resp.headers["Content-Disposition"]
    body = resp.get_data().decode("utf-8")
    return body, parse(body)


# --- the CSV helper ---------------------------------------------------------------------------

@pytest.mark.parametrize("text", DANGEROUS)
def test_each_dangerous_start_is_prefixed_and_restores(text):
    assert csvsafe.neutralise(text) == "'" + text
    assert csvsafe.restore(csvsafe.neutralise(text)) == text


def test_numbers_stay_numbers_and_plain_text_is_untouched():
    doc = csvsafe.dumps(["n", "t", "neg"], [[-5, "hello, \"world\"", -1200], [0, "Müller", None]])
    assert doc == 'n,t,neg\r\n-5,"hello, ""world""",-1200\r\n0,Müller,\r\n'


# --- through the endpoint ---------------------------------------------------------------------

def test_dangerous_cells_are_neutralised_and_parse_back_to_the_stored_text(login, make):
    finance = login("finance")
    c = make.customer(name="=HYPERLINK(\"http://evil\")", email="x@example.com", credits=1000)
    for i, text in enumerate(DANGEROUS):
        ledger.debit(customer_id=c.id, credits=1, feature="chat", reference=text,
                     reason=f"{text} reason, with \"quotes\"\nand a line", key=f"k{i}")
    body, rows = get_csv(finance, f"?customer={c.id}&type=debit")
    stored = {e.id: e for e in db.session.scalars(select(LedgerEntry).where(
        LedgerEntry.customer_id == c.id, LedgerEntry.type == "debit"))}
    assert len(rows) == len(DANGEROUS) == len(stored)
    for row in rows:
        e = stored[int(row["entry_id"])]
        assert row["reference"] == "'" + e.reference  # every reference starts dangerously
        assert csvsafe.restore(row["reference"]) == e.reference
        assert csvsafe.restore(row["reason"]) == e.reason
        assert row["customer_name"].startswith("'=HYPERLINK")
        assert csvsafe.restore(row["customer_name"]) == c.name
        # Numeric columns are bare numbers: a debit of one credit is -1, not '-1.
        assert int(row["amount"]) == -1 and not row["amount"].startswith("'")
        assert int(row["balance_after"]) == e.balance_after
    # No text cell of the file begins with a character a spreadsheet would evaluate.
    for row in rows:
        for name in TEXT_COLUMNS:
            assert not row[name].startswith(csvsafe.DANGEROUS), (name, row[name])
    assert body.split("\n", 1)[0].endswith("\r")  # CRLF line ends (RFC 4180)


def _ledger_world(make):
    """Several customers, types, features, references and days (back-dated through bulk rows)."""
    rng = random.Random(5)
    print("seed 5")
    data = ledger_data.Data(db.session)
    start = (utcnow() - timedelta(days=20)).replace(hour=0, minute=0, second=0, microsecond=0)
    people = []
    for n in range(3):
        cid, aid = data.customer(start, name=f"Person {n}", email=f"person{n}@example.com")
        data.sim.grant(aid, cid, start, 5000, "promo", reason="start")
        people.append((cid, aid))
    for i in range(300):
        cid, aid = rng.choice(people)
        at = start + timedelta(hours=i * 1.5 + rng.random())
        e = data.sim.debit(aid, cid, at, rng.randint(1, 9), feature=rng.choice(["chat", "image", "video"]),
                           reference=rng.choice([None, "project:1", "project:2", "=evil"]))
        if e and rng.random() < 0.1:
            data.sim.refund(e, at + timedelta(minutes=5), 1, reason="settled")
    ledger_data.write(db.session, data)
    return [c for c, _a in people], start


FILTERS = [
    {}, {"type": "debit"}, {"type": "refund"}, {"feature": "video"}, {"reference": "project:1"},
    {"reference": "=evil"}, {"from": "+3"}, {"to": "+8"}, {"from": "+2", "to": "+4"},
    {"from": "+4", "to": "+2"},  # reversed range: the page swaps it, so does the export
    {"customer": "email:1"}, {"customer": "ext:2"}, {"customer": "id:0", "type": "debit", "feature": "chat"},
    {"customer": "nobody@example.com"}, {"type": "bogus"}, {"from": "not-a-date"},
]


def _query(spec: dict, people: list[int], start) -> dict[str, str]:
    out = {}
    for k, v in spec.items():
        if k in ("from", "to") and v.startswith("+"):
            v = (start + timedelta(days=int(v[1:]))).date().isoformat()
        elif k == "customer" and ":" in v and not v.startswith("project"):
            how, n = v.split(":")
            c = db.session.get(Customer, people[int(n)])
            v = {"email": c.email, "ext": c.external_id, "id": f"#{c.id}"}[how]
        out[k] = v
    return out


def _expected(args: dict) -> list[int]:
    """The filters applied by hand to every entry (independent of the query builder)."""
    f = Filters.parse(args)
    customer = None
    if f.customer:
        customer = next((c for c in db.session.scalars(select(Customer))
                         if f.customer in (c.email, c.external_id, f"#{c.id}", str(c.id))), None)
        if customer is None:
            return []
    out = []
    for e in db.session.scalars(select(LedgerEntry)):
        day = e.created_at.date()
        if (f.date_from and day < f.date_from) or (f.date_to and day > f.date_to):
            continue
        if customer is not None and e.customer_id != customer.id:
            continue
        if (f.type and e.type != f.type) or (f.feature and e.feature != f.feature):
            continue
        if f.reference and e.reference != f.reference:
            continue
        out.append(e.id)
    return sorted(out, reverse=True)


def test_export_has_exactly_the_rows_of_the_page_filters(login, make):
    finance = login("finance")
    people, start = _ledger_world(make)
    from urllib.parse import urlencode
    for spec in FILTERS:
        args = _query(spec, people, start)
        _body, rows = get_csv(finance, "?" + urlencode(args))
        got = [int(r["entry_id"]) for r in rows]
        want = _expected(args)
        assert got == want, spec
        # ... which is also what the transactions page lists (same query builder, same order).
        f = Filters.parse(args)
        page = transactions.page(f, limit=200)
        assert [r.entry.id for r in page.entries] == want[:200], spec
        # ... and what the preview announces before the download.
        preview = finance.htmx("/transactions/export/preview?" + urlencode(args))
        assert preview.status_code == 200 and "<html" not in preview.get_data(as_text=True)
        assert f"Download {len(want):,} rows" in preview.get_data(as_text=True), spec
    assert len(_expected({})) > 300


def test_every_export_is_audited_with_filters_and_row_count(login, make):
    finance = login("finance")
    c = make.customer(credits=50)
    ledger.debit(customer_id=c.id, credits=5, feature="chat", key="a")
    _body, rows = get_csv(finance, f"?customer={c.external_id}&type=debit")
    assert len(rows) == 1
    logs = db.session.scalars(select(AuditLog).where(AuditLog.action.like("transactions.export%"))
                              .order_by(AuditLog.id)).all()
    assert [a.action for a in logs] == ["transactions.export.start", "transactions.export"]
    assert all(a.staff_id == finance.staff.id and a.actor == finance.staff.email for a in logs)
    assert logs[0].after == {"filters": {"customer": c.external_id, "type": "debit"}}
    assert logs[1].after["rows"] == 1 and logs[1].after["complete"] is True
    assert logs[1].after["filters"] == {"customer": c.external_id, "type": "debit"}


def test_export_permission_and_the_button_on_the_page(login, make):
    assert login("support").get("/transactions/export.csv").status_code == 403
    assert login("support").get("/transactions/export/preview").status_code == 403
    html = login("finance").get("/transactions/?type=debit").get_data(as_text=True)
    assert 'href="/transactions/export.csv?type=debit"' in html
    assert 'hx-get="/transactions/export/preview"' in html and 'id="export-panel"' in html
    # Without JavaScript the preview is a page of its own with the same download link.
    page = login("admin").get("/transactions/export/preview?type=debit").get_data(as_text=True)
    assert "<html" in page and 'href="/transactions/export.csv?type=debit"' in page


@pytest.mark.slow
def test_export_of_200000_rows_streams_with_bounded_memory(login, make):
    finance = login("finance")
    n = 200_000
    ledger_data.one_customer_many_debits(db.session, debits=n, reference="bulk")
    db.session.remove()
    tracemalloc.start()
    try:
        resp = finance.client.get("/transactions/export.csv?reference=bulk", buffered=False)
        assert resp.status_code == 200
        lines = size = biggest = 0
        tail = b""
        for chunk in resp.response:  # consumed as it streams, never joined
            size += len(chunk)
            biggest = max(biggest, len(chunk))
            lines += chunk.count(b"\r\n")
            tail = chunk[-200:]
        resp.close()
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"exported {lines - 1:,} rows, {size / 1e6:.1f} MB, peak traced memory {peak / 1e6:.1f} MB")
    assert lines == n + 1
    assert f",debit,-1,{n},{n - 1},chat,1,bulk,".encode() in tail  # the oldest debit comes last
    assert size > 15e6 and biggest < 1e6  # many small chunks
    assert peak < 50e6  # a generous bound, far below the file itself
    audit = db.session.scalars(select(AuditLog).where(AuditLog.action == "transactions.export")).one()
    assert audit.after["rows"] == n and audit.after["complete"] is True


def test_the_file_is_named_after_its_filters(login, make):
    staff = login("finance")
    c = make.customer(email="Ana.Lopez@example.com", credits=10)
    named = staff.get(f"/transactions/export.csv?from=2026-11-01&to=2026-11-30&type=grant"
                      f"&customer={c.email}").headers["Content-Disposition"]
    assert re.fullmatch(r'attachment; filename="transactions-2026-11-01-2026-11-30_grant_'
                        r'ana.lopez-example.com-\d{8}T\d{6}Z\.csv"', named), named
    plain = staff.get("/transactions/export.csv").headers["Content-Disposition"]
    assert re.fullmatch(r'attachment; filename="transactions-all-\d{8}T\d{6}Z\.csv"', plain), plain
