"""Every emit point writes its event in the transaction of the change, with the documented data:
grant.created (one grant, the set-based distribution), payment.succeeded, refund.processed,
task.finished; a rolled-back change leaves no event."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from models import CreditGrant, OutboxEvent, db
from services.core.errors import InsufficientCredits
from services.jobs import distribution
from services.ledger import posting as ledger
from services.payments import purchases
from services.refunds import requests as refunds
from services.tasks import prepaid as tasks


def events(type_: str) -> list[OutboxEvent]:
    db.session.expire_all()
    return list(db.session.scalars(select(OutboxEvent).where(OutboxEvent.type == type_)
                                   .order_by(OutboxEvent.id)))


def test_grant_created_with_its_data(make):
    c = make.customer(external_id="g-1")
    g = make.grant(c, credits=40, source="promo")
    [e] = events("grant.created")
    assert e.customer_id == c.id and e.event_id.startswith("msg_")
    assert e.data == {"grant_id": g.id, "credits": 40, "source": "promo", "expires_at": None,
                      "external_id": "g-1"}
    ledger.adjust(customer_id=c.id, credits=5, reason="goodwill", actor=ledger.SYSTEM)
    assert [x.data["source"] for x in events("grant.created")] == ["promo", "adjustment"]


def test_a_refused_change_emits_nothing(make):
    c = make.customer()
    with pytest.raises(InsufficientCredits):
        ledger.debit(customer_id=c.id, credits=5, feature="chat", key="k-none")
    assert db.session.scalar(select(OutboxEvent)) is None


def test_distribution_emits_one_grant_created_per_customer_set_based(make, app):
    from services.core import settings as app_settings
    app_settings.update(key="free_monthly_credits", value=50)
    customers = [make.customer(external_id=f"d-{i}") for i in range(4)]
    distribution.run(period="2031-05")
    got = events("grant.created")
    assert sorted(e.data["external_id"] for e in got) == [f"d-{i}" for i in range(4)]
    grants = {g.id: g for g in db.session.scalars(select(CreditGrant))}
    for e in got:
        g = grants[e.data["grant_id"]]
        assert e.customer_id == g.customer_id and e.data["credits"] == 50 == g.amount
        assert e.data["source"] == "distribution"
        assert e.data["expires_at"] == g.expires_at.isoformat(timespec="microseconds") + "Z"
    assert len({e.event_id for e in got}) == len(customers)


def test_payment_succeeded_once(make):
    c = make.customer(external_id="p-1")
    p = make.payment(c, status="created", credits=300, amount_minor=999,
                     provider_payment_id=None, kind="package")
    purchases.settle(payment_id=p.id, provider_payment_id="pi_123")
    purchases.settle(payment_id=p.id, provider_payment_id="pi_123")  # a replay
    [e] = events("payment.succeeded")
    assert e.data == {"payment_id": p.id, "provider": "stripe", "provider_payment_id": "pi_123",
                      "kind": "package", "amount": 999, "currency": "USD", "credits": 300,
                      "external_id": "p-1"}
    assert [x.data["source"] for x in events("grant.created")] == ["purchase"]


def test_refund_processed_for_a_provider_refund(make):
    c = make.customer(external_id="r-1")
    p = make.payment(c, status="created", credits=100, amount_minor=1000,
                     provider_payment_id=None, kind="package")
    purchases.settle(payment_id=p.id, provider_payment_id="pi_r1")
    refunds.apply_provider_refund(payment_id=p.id, refund_key="re_1", amount_minor=1000,
                                  refunded_total_minor=1000, provider_refund_id="re_1")
    refunds.apply_provider_refund(payment_id=p.id, refund_key="re_1", amount_minor=1000,
                                  refunded_total_minor=1000, provider_refund_id="re_1")
    [e] = events("refund.processed")
    assert e.customer_id == c.id
    assert (e.data["payment_id"], e.data["amount"], e.data["currency"], e.data["credits"],
            e.data["provider_refund_id"], e.data["external_id"]) == \
        (p.id, 1000, "USD", 100, "re_1", "r-1")


@pytest.mark.parametrize("end", ["complete", "fail", "cancel", "time_out"])
def test_task_finished_in_every_final_status(make, end):
    c = make.customer(external_id="t-1", credits=100)
    t = tasks.create(type="image", customer_id=c.id, estimated_credits=30)
    assert events("task.finished") == []
    if end == "complete":
        tasks.complete(task_id=t.id, actual_credits=20)
    elif end == "fail":
        tasks.fail(task_id=t.id, error="provider down")
    elif end == "cancel":
        tasks.cancel(task_id=t.id, reason="by staff")
    else:
        tasks.time_out(task_id=t.id)
    [e] = events("task.finished")
    status = {"complete": "succeeded", "fail": "failed", "cancel": "cancelled",
              "time_out": "timed_out"}[end]
    refunded = 10 if end == "complete" else 30
    assert e.data["task_id"] == t.id and e.data["status"] == status
    assert (e.data["charged_credits"], e.data["refunded_credits"], e.data["actual_credits"]) == \
        (30, refunded, 30 - refunded)
    assert e.data["type"] == "image" and e.data["external_id"] == "t-1"
