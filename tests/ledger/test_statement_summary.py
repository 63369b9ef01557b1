"""The customer statement's lifetime totals and features come from a stored prefix plus the
newest entries: always equal to a full scan of the ledger, however far the prefix has moved."""
from __future__ import annotations

from sqlalchemy import case, func, select

from models import LedgerEntry, StatementSummary, db
from services.ledger import posting as ledger
from services.ledger import rules, statement, statement_summary


def full_scan(customer_id: int) -> tuple[dict, list]:
    pos = func.sum(case((LedgerEntry.amount > 0, LedgerEntry.amount), else_=0))
    neg = func.sum(case((LedgerEntry.amount < 0, -LedgerEntry.amount), else_=0))
    sums = {t: [int(p), int(n)] for t, p, n in db.session.execute(
        select(LedgerEntry.type, pos, neg).where(LedgerEntry.customer_id == customer_id)
        .group_by(LedgerEntry.type))}
    feats = sorted(f for f in db.session.scalars(
        select(LedgerEntry.feature.distinct()).where(LedgerEntry.customer_id == customer_id)) if f)
    return sums, feats


def test_summary_equals_a_full_scan_before_and_after_the_prefix_moves(make, monkeypatch):
    monkeypatch.setattr(statement_summary, "REFRESH", 4)
    c = make.customer(credits=100)
    other = make.customer(credits=50)
    ledger.debit(customer_id=other.id, credits=5, feature="video")  # never counted for c
    assert db.session.get(StatementSummary, c.id) is None
    for i in range(5):
        ledger.debit(customer_id=c.id, credits=2, feature=("chat", "image")[i % 2])
    d = ledger.debit(customer_id=c.id, credits=7, feature="lip-sync")
    ledger.refund(entry_id=d.id, credits=3, reason="part failed")

    sm = statement_summary.summary(c.id)
    assert (sm.sums, sm.features) == full_scan(c.id)
    db.session.expire_all()
    stored = db.session.get(StatementSummary, c.id)
    top = db.session.scalar(select(func.max(LedgerEntry.id)).where(LedgerEntry.customer_id == c.id))
    assert stored.through_entry_id == top and stored.entries == 8  # grant, 6 debits, refund

    ledger.debit(customer_id=c.id, credits=1, feature="music")  # after the prefix
    ledger.adjust(customer_id=c.id, credits=-4, reason="correction", actor=rules.SYSTEM)
    sm = statement_summary.summary(c.id)
    assert (sm.sums, sm.features) == full_scan(c.id) and sm.entries == 10
    assert db.session.get(StatementSummary, c.id).through_entry_id == top  # tail of 2 < 4

    t = statement.totals(c.id)
    assert t == {"in": 100, "spent": 2 * 5 + 7 - 3 + 1, "expired": 0, "removed": 4}
    assert statement.features(c.id) == ["chat", "image", "lip-sync", "music"]


def test_a_customer_without_entries_has_empty_totals(make):
    c = make.customer()
    assert statement.features(c.id) == []
    assert statement.totals(c.id) == {"in": 0, "spent": 0, "expired": 0, "removed": 0}
