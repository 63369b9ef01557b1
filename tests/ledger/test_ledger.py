"""Ledger operations: draw-down order, allocations, refunds to the original grants, expiry."""
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from models import Allocation, CreditGrant, LedgerEntry, db, utcnow
from services.core import settings as app_settings
from services.core.errors import (
    Conflict,
    CustomerNotFound,
    IdempotencyConflict,
    InsufficientCredits,
    ValidationFailed,
)
from services.ledger import posting as ledger
from services.ledger import reconcile
from services.ledger.rules import Actor

STAFF = Actor("staff", "1")


def remaining(*grants):
    for g in grants:
        db.session.refresh(g)
    return tuple(g.remaining for g in grants)


def test_grant_creates_bucket_entry_and_balance(make):
    c = make.customer()
    e = ledger.grant(customer_id=c.id, credits=250, source="purchase", cost_minor=500,
                     currency="USD", reason="pack")
    assert (e.type, e.amount, e.balance_before, e.balance_after) == ("grant", 250, 0, 250)
    g = db.session.get(CreditGrant, e.grant_id)
    assert (g.amount, g.remaining, g.cost_minor, g.source) == (250, 250, 500, "purchase")
    assert ledger.balance(c.id) == 250


def test_debit_draws_soonest_expiring_grant_first(make):
    c = make.customer()
    paid = make.grant(c, credits=10, expires_in_days=None)
    promo = make.grant(c, credits=10, expires_in_days=3)
    later = make.grant(c, credits=10, expires_in_days=30)
    ledger.debit(customer_id=c.id, credits=4, feature="chat", key="k1")
    assert remaining(promo, later, paid) == (6, 10, 10)


def test_debit_spans_grants_and_records_allocations(make):
    c = make.customer()
    a = make.grant(c, credits=5, expires_in_days=1)
    b = make.grant(c, credits=5, expires_in_days=2)
    old = make.grant(c, credits=5)
    new = make.grant(c, credits=5)
    e = ledger.debit(customer_id=c.id, credits=13, feature="video")
    assert remaining(a, b, old, new) == (0, 0, 2, 5)  # then oldest among the never-expiring
    allocs = {x.grant_id: x.credits for x in e.allocations}
    assert allocs == {a.id: -5, b.id: -5, old.id: -3}
    assert (e.amount, e.balance_before, e.balance_after) == (-13, 20, 7)


def test_insufficient_credits_writes_nothing(make):
    c = make.customer(credits=10)
    before = db.session.scalar(select(func.count(LedgerEntry.id)))
    with pytest.raises(InsufficientCredits) as err:
        ledger.debit(customer_id=c.id, credits=11, feature="chat")
    assert err.value.status == 402 and err.value.code == "INSUFFICIENT_CREDITS"
    assert db.session.scalar(select(func.count(LedgerEntry.id))) == before
    assert ledger.balance(c.id) == 10


@pytest.mark.parametrize("bad", [0, -5, 1.5, "3", True, None, 10**13])
def test_invalid_amounts_are_rejected(make, bad):
    c = make.customer(credits=10)
    with pytest.raises(ValidationFailed):
        ledger.debit(customer_id=c.id, credits=bad, feature="chat")


def test_unknown_and_deleted_customers_are_not_found(make):
    from services.ledger import customers

    with pytest.raises(CustomerNotFound):
        ledger.debit(customer_id=424242, credits=1, feature="chat")
    c = make.customer(external_id="gone", credits=5)
    customers.soft_delete(external_id="gone")
    with pytest.raises(CustomerNotFound):
        ledger.debit(customer_id=c.id, credits=1, feature="chat")


def test_refund_returns_credits_to_the_grants_they_came_from(make):
    c = make.customer()
    a = make.grant(c, credits=5, expires_in_days=1)
    b = make.grant(c, credits=10)
    d = ledger.debit(customer_id=c.id, credits=8, feature="image")
    assert remaining(a, b) == (0, 7)
    r1 = ledger.refund(entry_id=d.id, credits=2, reason="partial")
    assert remaining(a, b) == (0, 9)  # latest-drawn grant first
    r2 = ledger.refund(entry_id=d.id, reason="rest")
    assert remaining(a, b) == (5, 10)
    assert (r1.amount, r2.amount, r2.balance_after) == (2, 6, 15)
    with pytest.raises(Conflict):
        ledger.refund(entry_id=d.id, reason="again")
    assert reconcile.run().ok


def test_refund_into_an_expired_grant_goes_to_a_fresh_bucket(make):
    c = make.customer()
    g = make.grant(c, credits=10, expires_in_days=1)
    d = ledger.debit(customer_id=c.id, credits=4, feature="chat")
    g.expires_at = utcnow() - timedelta(hours=1)
    db.session.commit()
    ledger.expire_grant(grant_id=g.id)
    r = ledger.refund(entry_id=d.id, reason="task failed")
    fresh = db.session.get(CreditGrant, r.grant_id)
    assert (fresh.source, fresh.remaining) == ("refund", 4)
    assert remaining(g) == (0,)
    assert ledger.balance(c.id) == 4
    assert reconcile.run().ok


def test_expiry_entry_and_lazy_expiry_on_debit(make):
    c = make.customer()
    stale = make.grant(c, credits=30, expires_in_days=1)
    make.grant(c, credits=10)
    stale.expires_at = utcnow() - timedelta(minutes=5)
    db.session.commit()
    with pytest.raises(InsufficientCredits):
        ledger.debit(customer_id=c.id, credits=20, feature="chat")  # only 10 are spendable
    ledger.debit(customer_id=c.id, credits=10, feature="chat")
    types = [e.type for e in ledger.entries_page(customer_id=c.id)]
    assert types[:2] == ["debit", "expiry"]
    assert remaining(stale) == (0,) and ledger.balance(c.id) == 0
    assert ledger.expire_grant(grant_id=stale.id) is None  # once only
    assert reconcile.run().ok


def test_paid_credits_never_expire_by_default_and_grace_period(make):
    c = make.customer()
    paid = make.grant(c, credits=10, source="purchase", expires_in_days=1)
    promo = make.grant(c, credits=10, expires_in_days=1)
    for g in (paid, promo):
        g.expires_at = utcnow() - timedelta(hours=2)
    db.session.commit()
    app_settings.update(key="expiry_grace_hours", value=3)
    assert ledger.expire_grant(grant_id=promo.id) is None  # within grace
    app_settings.update(key="expiry_grace_hours", value=1)
    assert ledger.expire_grant(grant_id=promo.id).amount == -10
    assert ledger.expire_grant(grant_id=paid.id) is None
    app_settings.update(key="paid_credits_never_expire", value=False)
    assert ledger.expire_grant(grant_id=paid.id).amount == -10


def test_adjustments_positive_negative_and_explicit_overdraw(make):
    c = make.customer(credits=10)
    up = ledger.adjust(customer_id=c.id, credits=5, reason="goodwill", actor=STAFF)
    assert (up.type, up.balance_after, up.actor_type) == ("adjustment", 15, "staff")
    with pytest.raises(InsufficientCredits):
        ledger.adjust(customer_id=c.id, credits=-20, reason="chargeback", actor=STAFF)
    with pytest.raises(ValidationFailed):
        ledger.adjust(customer_id=c.id, credits=-1, reason="  ", actor=STAFF)
    down = ledger.adjust(customer_id=c.id, credits=-20, reason="chargeback", actor=STAFF,
                         allow_negative=True)
    assert down.balance_after == -5
    report = reconcile.run()
    assert report.ok, report.lines()
    with pytest.raises(InsufficientCredits):
        ledger.debit(customer_id=c.id, credits=1, feature="chat")
    ledger.grant(customer_id=c.id, credits=8, source="promo")
    ledger.debit(customer_id=c.id, credits=3, feature="chat")
    assert ledger.balance(c.id) == 0 and reconcile.run().ok


def test_clawback_takes_unused_credits_of_one_grant(make):
    c = make.customer()
    g = make.grant(c, credits=100, source="purchase")
    ledger.debit(customer_id=c.id, credits=30, feature="chat")
    with pytest.raises(Conflict):
        ledger.clawback(grant_id=g.id, credits=71, reason="refund")
    e = ledger.clawback(grant_id=g.id, credits=70, reason="refund", key="refund:1")
    assert (e.type, e.amount, ledger.balance(c.id)) == ("clawback", -70, 0)
    assert ledger.clawback(grant_id=g.id, credits=70, reason="refund", key="refund:1").id == e.id


def test_reversal_of_debit_and_of_unspent_grant_once(make):
    c = make.customer(credits=50)
    d = ledger.debit(customer_id=c.id, credits=20, feature="chat")
    r = ledger.reverse(entry_id=d.id, reason="double charge", actor=STAFF)
    assert (r.type, r.amount, ledger.balance(c.id)) == ("reversal", 20, 50)
    assert ledger.reverse(entry_id=d.id, reason="double charge", actor=STAFF).id == r.id
    with pytest.raises(Conflict):
        ledger.refund(entry_id=d.id, reason="after reversal")
    g = ledger.grant(customer_id=c.id, credits=7, source="promo")
    assert ledger.reverse(entry_id=g.id, reason="wrong customer", actor=STAFF).amount == -7
    spent = ledger.grant(customer_id=c.id, credits=5, source="promo")
    ledger.debit(customer_id=c.id, credits=55, feature="chat")
    with pytest.raises(Conflict):
        ledger.reverse(entry_id=spent.id, reason="too late", actor=STAFF)
    assert reconcile.run().ok


def test_idempotent_retry_returns_the_first_entry_and_reuse_conflicts(make):
    c = make.customer(credits=100)
    first = ledger.debit(customer_id=c.id, credits=7, feature="chat", key="req-1")
    again = ledger.debit(customer_id=c.id, credits=7, feature="chat", key="req-1")
    assert again.id == first.id and ledger.balance(c.id) == 93
    with pytest.raises(IdempotencyConflict) as err:
        ledger.debit(customer_id=c.id, credits=8, feature="chat", key="req-1")
    assert err.value.status == 409 and err.value.code == "IDEMPOTENCY_KEY_REUSED"
    other = make.customer(credits=100)
    with pytest.raises(IdempotencyConflict):
        ledger.debit(customer_id=other.id, credits=7, feature="chat", key="req-1")
    assert ledger.balance(other.id) == 100


def test_entries_record_actor_reason_reference_and_request_id(make):
    from services.core import context

    c = make.customer(credits=10)
    token = context.set_request_id("req-abc")
    try:
        e = ledger.debit(customer_id=c.id, credits=1, feature="image", reference="project:9",
                         actor=Actor("api_key", "3"), quantity=1, meta={"model": "x"})
    finally:
        context.reset_request_id(token)
    assert (e.actor_type, e.actor_id, e.reference, e.request_id, e.meta) == \
        ("api_key", "3", "project:9", "req-abc", {"model": "x"})


@pytest.mark.parametrize("sql", [
    "UPDATE ledger_entries SET amount = amount - 1",
    "DELETE FROM ledger_entries",
    "UPDATE allocations SET credits = 0",
    "DELETE FROM allocations",
])
def test_the_database_refuses_to_edit_or_delete_entries(make, sql):
    from sqlalchemy import text
    from sqlalchemy.exc import DatabaseError

    c = make.customer(credits=40)
    ledger.debit(customer_id=c.id, credits=5, feature="chat")
    with pytest.raises(DatabaseError, match="immutable"):
        db.session.execute(text(sql))
    db.session.rollback()
    assert ledger.balance(c.id) == 35 and reconcile.run().ok


def test_reconcile_detects_a_hand_corrupted_balance(make, app):
    from sqlalchemy import text

    c = make.customer(credits=40)
    ledger.debit(customer_id=c.id, credits=5, feature="chat")
    assert reconcile.run().ok
    db.session.execute(text("UPDATE accounts SET balance = balance + 1 WHERE customer_id = :c"),
                       {"c": c.id})
    db.session.commit()
    report = reconcile.run()
    failed = {ch.name for ch in report.checks if not ch.ok}
    assert not report.ok and {"balance_vs_entries", "balance_vs_grants"} <= failed
    runner = app.test_cli_runner()
    result = runner.invoke(args=["reconcile"])
    assert result.exit_code == 1 and "FAIL" in result.output


def test_reconcile_detects_an_edited_entry_and_a_lost_allocation(make):
    """Someone with database rights drops the guard and edits history: reconcile notices."""
    from sqlalchemy import text

    from models.ledger import IMMUTABLE_TABLES

    c = make.customer(credits=40)
    d = ledger.debit(customer_id=c.id, credits=5, feature="chat")
    for t in IMMUTABLE_TABLES:
        if db.engine.dialect.name == "sqlite":
            db.session.execute(text(f"DROP TRIGGER {t}_no_update"))
            db.session.execute(text(f"DROP TRIGGER {t}_no_delete"))
        else:
            db.session.execute(text(f"ALTER TABLE {t} DISABLE TRIGGER {t}_immutable"))
    db.session.execute(text("UPDATE ledger_entries SET amount = -4, balance_after = 36 WHERE id = :i"),
                       {"i": d.id})
    db.session.execute(text("DELETE FROM allocations WHERE entry_id = :i"), {"i": d.id})
    db.session.commit()
    failed = {ch.name for ch in reconcile.run().checks if not ch.ok}
    assert {"entry_allocations", "grant_allocations", "balance_vs_entries"} <= failed
    assert db.session.scalar(select(func.count(Allocation.id))) >= 1
    if db.engine.dialect.name != "sqlite":
        for t in IMMUTABLE_TABLES:
            db.session.execute(text(f"ALTER TABLE {t} ENABLE TRIGGER {t}_immutable"))
        db.session.commit()
