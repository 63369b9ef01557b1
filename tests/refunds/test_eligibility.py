"""Refund eligibility per purchase: the window, used and expired credits, refunds already made
or in progress; the request refuses with the same reason."""
from __future__ import annotations

from datetime import timedelta

import pytest

from models import Payment, db, utcnow
from services.core import settings as app_settings
from services.core.errors import RefundNotEligible
from services.ledger import posting as ledger
from services.refunds import eligibility
from services.refunds import requests as refunds


def bought(make, customer, *, days_ago: float = 1, credits: int = 1000, amount: int = 1000,
           expires_in_days: float | None = None) -> Payment:
    """A paid purchase and the grant it made (as purchases.settle leaves them)."""
    p = make.payment(customer, amount_minor=amount, credits=credits,
                     paid_at=utcnow() - timedelta(days=days_ago))
    ledger.grant(customer_id=customer.id, credits=credits, source="purchase", payment_id=p.id,
                 cost_minor=amount, currency="USD", key=f"payment:stripe:{p.provider_payment_id}",
                 expires_at=None if expires_in_days is None
                 else utcnow() + timedelta(days=expires_in_days))
    return p


def answer(p: Payment) -> tuple[bool, int, int, str]:
    e = eligibility.for_payment_id(p.id)
    return e.eligible, e.refundable_credits, e.refundable_amount, e.reason


@pytest.fixture
def support(make):
    return make.staff(role="support")


def test_window(make, support):
    c = make.customer()
    inside, edge, outside = bought(make, c, days_ago=1), bought(make, c, days_ago=13.9), \
        bought(make, c, days_ago=15)
    assert answer(inside) == (True, 1000, 1000, "eligible")
    assert answer(edge)[0] is True
    assert answer(outside) == (False, 0, 0, "outside the 14-day refund window")
    with pytest.raises(RefundNotEligible, match="outside the 14-day"):
        refunds.request(payment_id=outside.id, reason="late", staff=support)
    app_settings.update(key="refund_window_days", value=30, reason="longer window")
    assert answer(outside)[0] is True


def test_partly_used_fully_used_and_expired(make):
    c = make.customer()
    promo = make.grant(c, credits=100, expires_in_days=3)  # spent first: soonest expiry
    p = bought(make, c, credits=1000, amount=2999)
    ledger.debit(customer_id=c.id, credits=400, feature="chat", key="spend-1")
    db.session.refresh(promo)
    assert promo.remaining == 0
    assert answer(p) == (True, 700, 2999 * 700 // 1000, "eligible")  # 2099: rounded down
    ledger.debit(customer_id=c.id, credits=700, feature="chat", key="spend-2")
    assert answer(p) == (False, 0, 0, "all credits of this purchase are used or expired")

    d = make.customer()
    gone = bought(make, d, expires_in_days=-1)  # past its expiry (the job has not run yet)
    assert answer(gone)[3] == "all credits of this purchase are used or expired"


def test_already_refunded_and_refund_in_progress(make, support):
    c = make.customer()
    done = bought(make, c)
    done.refunded_minor, done.status = 1000, "refunded"
    db.session.commit()
    assert answer(done) == (False, 0, 0, "already refunded in full")

    half = bought(make, c)
    half.refunded_minor, half.status = 400, "partially_refunded"
    db.session.commit()
    assert answer(half) == (True, 1000, 600, "eligible")  # capped by the money left

    p = bought(make, c)
    r = refunds.request(payment_id=p.id, credits=600, reason="most of it", staff=support)
    assert answer(p) == (True, 400, 400, "eligible")  # the rest stays requestable
    refunds.request(payment_id=p.id, reason="the rest", staff=support)
    assert answer(p) == (False, 0, 0, "a refund of this purchase is already in progress")
    with pytest.raises(RefundNotEligible, match="in progress"):
        refunds.request(payment_id=p.id, credits=1, reason="more", staff=support)
    refunds.reject(refund_id=r.id, staff=make.staff(role="finance"), note="changed our mind")
    assert answer(p) == (True, 600, 600, "eligible")  # a rejected request frees its credits


def test_unpaid_payments_are_not_eligible(make):
    c = make.customer()
    p = make.payment(c, status="created")
    assert answer(p)[:1] == (False,) and answer(p)[3] == "the payment is not completed"
