"""POST /api/webhooks/customers (seed 002): signed user lifecycle, idempotent, one transaction."""
from __future__ import annotations

import time

from sqlalchemy import select

from models import Customer, LedgerEntry, WebhookEvent, db
from services.ledger import posting as ledger
from services.ledger import reconcile
from tests.fakes import signing
from tests.helpers import assert_error
from tests.payments.helpers import CUSTOMER_SECRET, counts, event_rows, send_customer

URL = "/api/webhooks/customers"


def event(eid: str, type_: str, external_id: str = "prod-1", created: int | None = None, **data):
    body = {"id": eid, "type": type_, "data": {"external_id": external_id, **data}}
    if created is not None:
        body["created"] = created
    return body


def customer(external_id: str = "prod-1") -> Customer | None:
    db.session.rollback()
    return db.session.scalar(select(Customer).where(Customer.external_id == external_id))


def test_created_with_credit_delta_then_redelivered_changes_nothing_more(pay_app):
    client = pay_app.test_client()
    created = event("evt_1", "customer.created", email="ana@example.com", name="Ana",
                    credit_delta=50, reason="welcome bonus")

    first = send_customer(client, created)
    again = send_customer(client, created)

    assert first == (200, {"success": True, "data": {
        "received": True, "event_id": "evt_1", "type": "customer.created", "status": "processed",
        "duplicate": False, "balance": 50}})
    assert again[1]["data"]["duplicate"] is True
    c = customer()
    assert (c.email, c.name, ledger.balance(c.id)) == ("ana@example.com", "Ana", 50)
    entry = db.session.scalar(select(LedgerEntry).where(LedgerEntry.type == "adjustment"))
    assert (entry.idempotency_key, entry.actor_type, entry.reason) == \
        ("customer-webhook:evt_1", "webhook", "welcome bonus")
    assert event_rows() == [("customer.created", "processed", "")]


def test_updated_and_deleted_keep_the_ledger(pay_app):
    client = pay_app.test_client()
    send_customer(client, event("evt_1", "customer.created", email="a@example.com", credit_delta=30))
    send_customer(client, event("evt_2", "customer.updated", name="Renamed", credit_delta=-10))
    send_customer(client, event("evt_3", "customer.deleted"))
    late = send_customer(client, event("evt_4", "customer.updated", name="Too late"))

    c = customer()
    assert c.deleted_at is not None and c.name == "Renamed" and c.email == "a@example.com"
    assert ledger.balance(c.id) == 20  # soft delete: the ledger stays
    assert len(db.session.scalars(select(LedgerEntry)).all()) == 2
    assert late[1]["data"]["status"] == "ignored"
    assert reconcile.run().ok


def test_created_again_after_deletion_revives_only_when_newer(pay_app):
    client = pay_app.test_client()
    send_customer(client, event("evt_1", "customer.created", email="a@example.com"))
    send_customer(client, event("evt_2", "customer.deleted"))
    deleted_at = int(time.time())

    stale = send_customer(client, event("evt_3", "customer.created", email="a@example.com",
                                        created=deleted_at - 3600))
    assert stale[1]["data"]["status"] == "ignored" and customer().deleted_at is not None

    fresh = send_customer(client, event("evt_4", "customer.created", email="b@example.com",
                                        created=deleted_at + 5))
    assert fresh[1]["data"]["status"] == "processed"
    assert customer().deleted_at is None and customer().email == "b@example.com"


def test_one_transaction_per_event_a_failing_delta_leaves_nothing(pay_app):
    client = pay_app.test_client()
    send_customer(client, event("evt_1", "customer.created", email="a@example.com", name="Ana",
                                credit_delta=5))

    status, body = send_customer(client, event("evt_2", "customer.updated", name="Changed",
                                               credit_delta=-50))

    assert_error(status, body, "INSUFFICIENT_CREDITS", 402)
    c = customer()
    assert c.name == "Ana" and ledger.balance(c.id) == 5  # the rename rolled back with it
    row = db.session.scalar(select(WebhookEvent).where(WebhookEvent.event_id == "evt_2"))
    assert row.status == "failed" and "Insufficient" in row.error
    # The sender retries the same event once the balance allows it: it is applied then.
    ledger.grant(customer_id=c.id, credits=100, source="promo", reason="top up")
    retry = send_customer(client, event("evt_2", "customer.updated", name="Changed", credit_delta=-50))
    assert retry[1]["data"]["status"] == "processed" and customer().name == "Changed"
    assert ledger.balance(c.id) == 55


def test_signature_failures_are_400_and_write_nothing(pay_app):
    client = pay_app.test_client()
    payload = event("evt_1", "customer.created", email="a@example.com", credit_delta=10)
    body, good = signing.customer_webhook_request(payload, CUSTOMER_SECRET)
    header = "X-Creditdesk-Signature"
    attempts = {
        "tampered body": (body.replace(b"10", b"99"), good),
        "tampered signature": (body, {**good, header: signing.flip_last(good[header])}),
        "wrong secret": signing.customer_webhook_request(payload, "not-the-secret"),
        "missing header": (body, {"Content-Type": "application/json"}),
        "301 s old": signing.customer_webhook_request(payload, CUSTOMER_SECRET,
                                                      timestamp=int(time.time()) - 301),
        # ahead: 10 s past the edge, or the seconds the loop takes bring it back inside (the exact
        # edge is tested on a fixed clock in test_webhooks_tolerance.py)
        "310 s ahead": signing.customer_webhook_request(payload, CUSTOMER_SECRET,
                                                        timestamp=int(time.time()) + 310),
        "malformed": (body, {**good, header: "v1=abc"}),
    }
    before = counts()

    for name, (data, headers) in attempts.items():
        resp = client.post(URL, data=data, headers=headers)
        assert resp.status_code == 400, name
        assert_error(resp.status_code, resp.get_json(), "INVALID_SIGNATURE", 400)

    assert counts() == before and customer() is None
    ok = send_customer(client, payload, timestamp=int(time.time()) - 290)
    assert ok[0] == 200  # inside the tolerance


def test_unset_secret_refuses_every_delivery(pay_app):
    pay_app.config["CUSTOMER_WEBHOOK_SECRET"] = None
    status, body = send_customer(pay_app.test_client(),
                                 event("evt_1", "customer.created", email="a@example.com"))
    assert_error(status, body, "CUSTOMER_WEBHOOK_MISCONFIGURED", 500)
    assert customer() is None and counts()["WebhookEvent"] == 0


def test_invalid_bodies_are_422_and_write_nothing(pay_app):
    client = pay_app.test_client()
    before = counts()
    for payload in ({"id": "e", "type": "customer.created"},
                    {"id": "e", "type": "customer.created", "data": {"external_id": ""}},
                    {"id": "e", "type": "customer.created",
                     "data": {"external_id": "x", "email": "a@b.c", "credit_delta": 1.5}},
                    {"id": "e", "type": "customer.created",
                     "data": {"external_id": "x", "email": "a@b.c", "credit_delta": 2**63}},
                    {"id": 7, "type": "customer.created", "data": {"external_id": "x"}},
                    ["not", "an", "object"]):
        status, body = send_customer(client, payload)
        assert_error(status, body, "VALIDATION_ERROR", 422)
    status, body = send_customer(client, event("evt_9", "customer.updated", "new-user"))
    assert_error(status, body, "VALIDATION_ERROR", 422)  # a new customer needs an email
    assert counts()["LedgerEntry"] == before["LedgerEntry"] and customer("x") is None


def test_credits_remaining_sets_the_balance_with_one_adjustment_each_way(pay_app):
    client = pay_app.test_client()
    send_customer(client, event("evt_1", "customer.created", email="a@example.com", credit_delta=50))
    up = send_customer(client, event("evt_2", "customer.updated", creditsRemaining=200))
    down = send_customer(client, event("evt_3", "customer.updated", credits_remaining=30))
    again = send_customer(client, event("evt_3", "customer.updated", credits_remaining=30))
    same = send_customer(client, event("evt_4", "customer.updated", credits_remaining=30))

    assert [r[1]["data"]["balance"] for r in (up, down, again, same)] == [200, 30, None, 30]
    assert again[1]["data"]["duplicate"] is True
    c = customer()
    rows = db.session.execute(select(LedgerEntry.amount, LedgerEntry.idempotency_key)
                              .where(LedgerEntry.customer_id == c.id).order_by(LedgerEntry.id)).all()
    assert [tuple(r) for r in rows] == [(50, "customer-webhook:evt_1"), (150, "customer-webhook:evt_2"),
                                        (-170, "customer-webhook:evt_3")]
    assert ledger.balance(c.id) == 30 and reconcile.run().ok


def test_credits_remaining_and_credit_delta_together_or_negative_are_422(pay_app):
    client = pay_app.test_client()
    both = send_customer(client, event("evt_1", "customer.created", email="a@example.com",
                                       credit_delta=5, credits_remaining=10))
    negative = send_customer(client, event("evt_2", "customer.created", email="a@example.com",
                                           credits_remaining=-1))
    assert_error(both[0], both[1], "VALIDATION_ERROR", 422)
    assert_error(negative[0], negative[1], "VALIDATION_ERROR", 422)
    assert customer() is None
