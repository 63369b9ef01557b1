"""Balance notices and the auto top-up trigger (services/ledger/crossings.py, docs/notices.md)."""
from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from models import AutoTopup, AutoTopupAttempt, LedgerEntry, OutboxEvent, db, utcnow
from services.core import settings as app_settings
from services.core.errors import InsufficientCredits
from services.ledger import batch, crossings, expiry
from services.ledger import posting as ledger
from services.ledger.rules import Actor
from services.tasks import prepaid

STAFF = Actor("staff", "1")


def _events(customer_id: int, type_: str | None = None) -> list[tuple]:
    db.session.rollback()  # a fresh snapshot (other threads wrote)
    types = [type_] if type_ else ["credits.low_balance", "credits.depleted"]
    q = (select(OutboxEvent).where(OutboxEvent.customer_id == customer_id,
                                   OutboxEvent.type.in_(types)).order_by(OutboxEvent.id))
    return [(e.type, e.data["balance"], e.data["threshold"], e.data["external_id"])
            for e in db.session.scalars(q)]


def _attempts(customer_id: int) -> list[AutoTopupAttempt]:
    db.session.rollback()
    return list(db.session.scalars(select(AutoTopupAttempt).where(
        AutoTopupAttempt.customer_id == customer_id).order_by(AutoTopupAttempt.id)))


def _debit(c, credits: int) -> LedgerEntry:
    return ledger.debit(customer_id=c.id, credits=credits, feature="chat")


def _auto_topup(make, c, *, threshold: int, monthly_limit: int = 5, **kw) -> AutoTopup:
    row = AutoTopup(customer_id=c.id, threshold=threshold, package_id=make.package().id,
                    monthly_limit=monthly_limit, **{"enabled": True, **kw})
    db.session.add(row)
    db.session.commit()
    return row


# --- the rule ------------------------------------------------------------------------------------

@pytest.mark.parametrize("before,after,threshold,expected", [
    (150, 90, 100, True),    # above -> below
    (100, 99, 100, True),    # at -> below
    (90, 80, 100, False),    # below -> below
    (150, 100, 100, False),  # lands on it: not below
    (150, 160, 100, False),  # up
])
def test_crossed(before, after, threshold, expected):
    assert crossings.crossed(before, after, threshold) is expected


@pytest.mark.parametrize("before,after,expected", [(5, 0, True), (5, -3, True), (0, 0, False),
                                                   (0, -1, False), (6, 1, False)])
def test_depleted(before, after, expected):
    assert crossings.depleted(before, after) is expected


def test_low_balance_fires_once_per_crossing_and_again_after_going_back_above(app, make):
    c = make.customer(credits=150)  # the setting's default threshold: 100
    _debit(c, 40)   # 110
    assert _events(c.id) == []
    _debit(c, 20)   # 90: crossed
    _debit(c, 10)   # 80: still below
    assert _events(c.id) == [("credits.low_balance", 90, 100, c.external_id)]
    make.grant(c, credits=20)  # 100: back at the threshold
    _debit(c, 1)    # 99: crossed again
    assert _events(c.id)[1:] == [("credits.low_balance", 99, 100, c.external_id)]
    _debit(c, 99)   # 0: depleted, no second low balance
    assert _events(c.id)[2:] == [("credits.depleted", 0, 100, c.external_id)]
    with pytest.raises(InsufficientCredits):
        _debit(c, 1)
    assert len(_events(c.id)) == 3


def test_one_movement_from_above_to_zero_fires_both_in_order(app, make):
    c = make.customer(credits=150)
    _debit(c, 150)
    assert [e[:2] for e in _events(c.id)] == [("credits.low_balance", 0), ("credits.depleted", 0)]


def test_threshold_precedence_customer_then_plan_then_setting(app, make):
    app_settings.update(key="low_balance_threshold", value=300, reason="test")
    plan = make.plan(low_balance_threshold=200)
    by_setting = make.customer(credits=1000)
    by_plan = make.customer(credits=1000, plan=plan)
    by_customer = make.customer(credits=1000, plan=plan)
    by_customer.low_balance_threshold = 100
    db.session.commit()
    for c in (by_setting, by_plan, by_customer):
        assert crossings.effective_threshold(c) in (300, 200, 100)
        _debit(c, 950)  # 1000 -> 50: below every threshold
    assert [e[2] for c in (by_setting, by_plan, by_customer)
            for e in _events(c.id, "credits.low_balance")] == [300, 200, 100]
    plan.low_balance_threshold = None  # back to the setting
    db.session.commit()
    assert crossings.effective_threshold(by_plan) == 300


def test_threshold_zero_turns_the_low_balance_notice_off_but_not_depleted(app, make):
    c = make.customer(credits=150)
    c.low_balance_threshold = 0
    db.session.commit()
    _debit(c, 100)
    _debit(c, 50)
    assert [e[0] for e in _events(c.id)] == ["credits.depleted"]


def test_every_lowering_movement_is_checked(app, make):
    """Expiry (the job's bulk pass and a debit's own), adjustments down, clawbacks, reversals."""
    pay = make.customer(credits=0)
    g = make.grant(pay, credits=150, source="purchase")
    ledger.clawback(grant_id=g.id, credits=60, reason="refund")  # 90
    adj = make.customer(credits=150)
    ledger.adjust(customer_id=adj.id, credits=-60, reason="fix", actor=STAFF)
    rev = make.customer(credits=20)
    entry = ledger.grant(customer_id=rev.id, credits=130, source="promo", reason="oops")
    ledger.reverse(entry_id=entry.id, reason="undo", actor=STAFF)
    exp = make.customer(credits=50)
    make.grant(exp, credits=100, expires_in_days=-1)
    expiry.run_pass()
    stale = make.customer(credits=50)
    make.grant(stale, credits=100, expires_in_days=-1)
    _debit(stale, 1)  # expires the stale bucket on the way: 150 -> 50 -> 49
    assert _events(pay.id) == [("credits.low_balance", 90, 100, pay.external_id)]
    assert _events(adj.id) == [("credits.low_balance", 90, 100, adj.external_id)]
    assert _events(rev.id) == [("credits.low_balance", 20, 100, rev.external_id)]
    assert _events(exp.id) == [("credits.low_balance", 50, 100, exp.external_id)]
    assert _events(stale.id) == [("credits.low_balance", 50, 100, stale.external_id)]


def test_grants_and_refunds_fire_nothing(app, make):
    c = make.customer(credits=50)
    e = _debit(c, 20)
    ledger.refund(entry_id=e.id, reason="back")
    make.grant(c, credits=500)
    assert _events(c.id) == []


# --- auto top-up ------------------------------------------------------------------------------

def test_auto_topup_attempt_on_the_debit_that_crosses_its_threshold(app, make):
    c = make.customer(credits=600)
    c.low_balance_threshold = 0
    db.session.commit()
    setting = _auto_topup(make, c, threshold=500)
    _debit(c, 50)  # 550
    assert _attempts(c.id) == []
    crossing = _debit(c, 60)  # 490
    _debit(c, 10)  # 480: below, no new crossing
    [a] = _attempts(c.id)
    assert (a.status, a.balance_at_trigger, a.package_id) == ("pending", 490, setting.package_id)
    assert a.key == f"autotopup:{c.id}:{crossing.id}"
    assert _events(c.id) == []  # the notices are separate (threshold 0 here)


def test_auto_topup_only_for_debits_and_not_when_disabled_or_paused(app, make):
    adj = make.customer(credits=600)
    _auto_topup(make, adj, threshold=500)
    ledger.adjust(customer_id=adj.id, credits=-200, reason="fix", actor=STAFF)
    off = make.customer(credits=600)
    _auto_topup(make, off, threshold=500, enabled=False)
    paused = make.customer(credits=600)
    _auto_topup(make, paused, threshold=500, paused_at=utcnow())
    for c in (off, paused):
        _debit(c, 200)
    assert _attempts(adj.id) == _attempts(off.id) == _attempts(paused.id) == []


def test_monthly_limit_counts_attempts_not_failed_and_an_open_one_blocks(app, make):
    c = make.customer(credits=1000)
    _auto_topup(make, c, threshold=500, monthly_limit=2)

    def cross(status: str | None):
        _debit(c, 600)
        make.grant(c, credits=600)  # back above for the next crossing
        if status:
            db.session.execute(AutoTopupAttempt.__table__.update()
                               .where(AutoTopupAttempt.status == "pending").values(status=status))
            db.session.commit()

    cross(None)  # 1: pending
    cross("failed")  # the open one blocked a second; now it failed (not counted)
    assert len(_attempts(c.id)) == 1
    cross("succeeded")  # 2nd attempt, succeeded: counts (1)
    cross("succeeded")  # 3rd attempt: counts (2)
    cross(None)  # the limit: no attempt
    assert [a.status for a in _attempts(c.id)] == ["failed", "succeeded", "succeeded"]
    last_month = utcnow().replace(day=1) - timedelta(days=1)
    db.session.execute(AutoTopupAttempt.__table__.update().values(created_at=last_month))
    db.session.commit()
    cross(None)  # a new calendar month
    assert [a.status for a in _attempts(c.id)][-1] == "pending"


# --- under concurrency (50 debits at once) -----------------------------------------------------

def _storm(app, c, n: int = 50, credits: int = 19) -> list[str]:
    """n debits at once over the three debit paths (hot, batch, a prepaid task's general path)."""
    cid, ext = c.id, c.external_id
    errors: list[str] = []
    start = threading.Barrier(n)

    def call(i: int):
        with app.app_context():
            start.wait()
            try:
                if i % 3 == 0:
                    ledger.debit(customer_id=cid, credits=credits, feature="chat")
                elif i % 3 == 1:
                    [r] = batch.debit_many([batch.Item(customer=ext, feature="chat",
                                                       idempotency_key=f"storm-{i}", credits=credits)])
                    assert r["success"], r
                else:
                    prepaid.create(type="chat", customer_id=cid, estimated_credits=credits)
            except Exception as err:  # collected; the test fails on any
                errors.append(repr(err))
            finally:
                db.session.remove()

    threads = [threading.Thread(target=call, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    db.session.rollback()
    return errors


def test_50_concurrent_debits_cross_once_one_notice_one_attempt(app, make):
    c = make.customer(credits=1000)
    c.low_balance_threshold = 500
    db.session.commit()
    _auto_topup(make, c, threshold=700)
    assert _storm(app, c) == []
    assert ledger.balance(c.id) == 50
    [low] = _events(c.id, "credits.low_balance")
    # the one entry that crossed is the one whose balance the notice carries
    crossing = db.session.scalars(select(LedgerEntry).where(
        LedgerEntry.customer_id == c.id, LedgerEntry.balance_before >= 500,
        LedgerEntry.balance_after < 500)).one()
    assert low == ("credits.low_balance", crossing.balance_after, 500, c.external_id)
    [a] = _attempts(c.id)
    topup_crossing = db.session.scalars(select(LedgerEntry).where(
        LedgerEntry.customer_id == c.id, LedgerEntry.balance_before >= 700,
        LedgerEntry.balance_after < 700)).one()
    assert a.key == f"autotopup:{c.id}:{topup_crossing.id}"
    assert a.balance_at_trigger == topup_crossing.balance_after
    assert _events(c.id, "credits.depleted") == []
