"""Refund by reference (a cancelled project): every debit carrying the reference, for every
customer, refunded once however often it runs; the preview's figures are the result's."""
from __future__ import annotations

import random
import threading

import pytest
from sqlalchemy import func, select

from models import AuditLog, LedgerEntry, db
from services.core.errors import Conflict, ValidationFailed
from services.ledger import customers, reconcile
from services.ledger import posting as ledger
from services.refunds import by_reference as refund_reference


def debit(c, credits: int, reference: str | None, key: str):
    return ledger.debit(customer_id=c.id, credits=credits, feature="video", key=key,
                        reference=reference)


def refund_entries() -> list[LedgerEntry]:
    db.session.rollback()
    return list(db.session.scalars(select(LedgerEntry).where(LedgerEntry.type == "refund")
                                   .order_by(LedgerEntry.id)))


@pytest.fixture
def project(make):
    """Three customers charged on project:123 (one partly refunded already), one elsewhere."""
    a, b, c, other = (make.customer(credits=1000) for _ in range(4))
    debit(a, 100, "project:123", "a1")
    debit(a, 50, "project:123", "a2")
    debit(b, 200, "project:123", "b1")
    partly = debit(c, 80, "project:123", "c1")
    ledger.refund(entry_id=partly.id, credits=30, reason="task settled below estimate", key="c1-r")
    debit(other, 70, "project:999", "o1")
    debit(a, 10, None, "a-none")
    return {"a": a, "b": b, "c": c, "other": other}


def test_preview_then_run_twice_refunds_each_debit_once(project, make):
    staff = make.staff(role="finance")
    preview = refund_reference.preview(reference="project:123")
    assert preview.figures == (3, 4, 100 + 50 + 200 + 50)
    assert [(line.customer_id, line.debits, line.credits) for line in preview.lines] == [
        (project["b"].id, 1, 200), (project["a"].id, 2, 150), (project["c"].id, 1, 50)]

    first = refund_reference.run(reference="project:123", staff=staff, reason="client cancelled",
                                 expect=preview.figures)
    again = refund_reference.run(reference=" project:123 ", staff=staff)

    assert (first.customers, first.debits, first.credits) == preview.figures
    assert (again.debits, again.credits, again.done_debits) == (0, 0, 4)
    keys = sorted(e.idempotency_key for e in refund_entries() if e.idempotency_key.startswith("refund-ref:"))
    assert len(keys) == 4
    assert [ledger.balance(project[k].id) for k in "abc"] == [990, 1000, 1000]
    assert ledger.balance(project["other"].id) == 930  # another reference is untouched
    assert refund_reference.preview(reference="project:123").figures == (0, 0, 0)
    audits = db.session.scalars(select(AuditLog).where(AuditLog.action == "refund.by_reference")
                                .order_by(AuditLog.id)).all()
    assert [(x.after["debits"], x.after["credits"]) for x in audits] == [(4, 400), (0, 0)]
    assert audits[0].staff_id == staff.id and audits[0].reason == "client cancelled"
    assert reconcile.run().ok


def test_run_refuses_when_the_figures_changed_since_the_preview(project, make):
    staff = make.staff(role="admin")
    shown = refund_reference.preview(reference="project:123").figures
    debit(project["b"], 5, "project:123", "b2")  # someone spent meanwhile

    with pytest.raises(Conflict) as err:
        refund_reference.run(reference="project:123", staff=staff, expect=shown)

    assert err.value.details == {"customers": 3, "debits": 5, "credits": 405}
    assert refund_entries()[1:] == []  # only the partial refund made by the fixture
    done = refund_reference.run(reference="project:123", staff=staff, expect=(3, 5, 405))
    assert done.credits == 405
    assert reconcile.run().ok


def test_deleted_customers_and_bad_references(project, make):
    customers.soft_delete(external_id=project["b"].external_id)
    assert refund_reference.preview(reference="project:123").figures == (2, 3, 200)
    for bad in ("", "   ", "x" * 201):
        with pytest.raises(ValidationFailed):
            refund_reference.preview(reference=bad)
    assert refund_reference.preview(reference="project:nothing").figures == (0, 0, 0)


def test_random_debits_and_partial_refunds_preview_equals_result(make):
    seed = random.randrange(1_000_000)
    print(f"seed={seed}")
    rnd = random.Random(seed)
    people = [make.customer(credits=10_000) for _ in range(6)]
    expected = 0
    for i in range(40):
        c = rnd.choice(people)
        credits = rnd.randint(1, 60)
        ref = rnd.choice(["project:7", "project:8"])
        e = debit(c, credits, ref, f"d{i}")
        back = rnd.choice([0, 0, credits // 2, credits])
        if back:
            ledger.refund(entry_id=e.id, credits=back, reason="partial", key=f"r{i}")
        if ref == "project:7":
            expected += credits - back
    staff = make.staff(role="finance")
    preview = refund_reference.preview(reference="project:7")
    result = refund_reference.run(reference="project:7", staff=staff, expect=preview.figures)
    assert result.credits == preview.credits == expected
    assert refund_reference.run(reference="project:7", staff=staff).credits == 0
    assert reconcile.run().ok


def test_two_concurrent_runs_refund_once(pg_app, factory):
    people = [factory.customer(credits=500) for _ in range(5)]
    for i, c in enumerate(people):
        for j in range(3):
            debit(c, 10 + j, "project:42", f"k{i}-{j}")
    staff = factory.staff(role="admin")
    assert staff.id and staff.email  # loaded here, read by both threads
    results, errors = [], []

    def go():
        with pg_app.app_context():
            try:
                results.append(refund_reference.run(reference="project:42", staff=staff).credits)
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(results) == [0, 5 * (10 + 11 + 12)]
    db.session.rollback()
    assert db.session.scalar(select(func.count()).select_from(LedgerEntry)
                             .where(LedgerEntry.type == "refund")) == 15
    assert reconcile.run().ok
