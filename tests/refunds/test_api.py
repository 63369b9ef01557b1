"""Refund requests over the API (scope payments:write): filed once per Idempotency-Key,
refused with REFUND_NOT_ELIGIBLE and the reason, approved and processed by staff afterwards."""
from __future__ import annotations

from sqlalchemy import select

from models import AuditLog, Refund, db
from services.ledger import reconcile
from services.refunds import requests as refunds
from tests.helpers import ApiClient, assert_error
from tests.refunds.helpers import clawbacks, stripe_purchase


def test_request_over_the_api_then_staff_approve_and_process(pay_app, pay_api, make,
                                                             stripe_server):
    p = stripe_purchase(pay_app, pay_api, make, stripe_server, external_id="api-1",
                        credits=1000, price_minor=2000)
    headers = {"Idempotency-Key": "refund-api-1"}
    body = {"payment_id": p.id, "credits": 250, "reason": "customer changed their mind"}

    status, first, _ = pay_api.post("/api/v1/customers/api-1/refunds", body, headers=headers)
    again = pay_api.post("/api/v1/customers/api-1/refunds", body, headers=headers)[1]

    assert status == 201, first
    data = first["data"]
    assert (data["status"], data["credits"], data["amount"], data["currency"]) == \
        ("requested", 250, 500, "USD")
    assert again["data"]["refund_id"] == data["refund_id"]
    assert len(db.session.scalars(select(Refund)).all()) == 1
    who = db.session.scalar(select(AuditLog.actor).where(AuditLog.action == "refund.requested"))
    assert who.startswith("api_key:")

    finance = make.staff(role="finance")
    refunds.approve(refund_id=data["refund_id"], staff=finance)  # no staff requester: any approver
    refunds.process(refund_id=data["refund_id"], staff=finance)
    listed = pay_api.get("/api/v1/customers/api-1/refunds")
    assert listed[0] == 403  # the key has payments:write only
    _, plain = make.api_key(scopes=["customers:read"])
    status, page, _ = ApiClient(pay_app, plain).get("/api/v1/customers/api-1/refunds")
    assert status == 200
    [row] = page["data"]["refunds"]
    assert (row["status"], row["credits"], row["amount"]) == ("processed", 250, 500)
    assert row["provider_refund_id"] in stripe_server.refunds
    assert [c.amount for c in clawbacks(p.id)] == [-250]
    assert reconcile.run().ok


def test_api_refusals(pay_app, pay_api, make, stripe_server):
    p = stripe_purchase(pay_app, pay_api, make, stripe_server, external_id="api-2")
    make.customer(external_id="someone-else")
    url = "/api/v1/customers/api-2/refunds"

    status, body, _ = pay_api.post(url, {"payment_id": p.id, "credits": 1001, "reason": "too many"})
    assert_error(status, body, "REFUND_NOT_ELIGIBLE", 409)
    status, body, _ = pay_api.post("/api/v1/customers/someone-else/refunds",
                                   {"payment_id": p.id, "reason": "not theirs"})
    assert_error(status, body, "NOT_FOUND", 404)
    status, body, _ = pay_api.post(url, {"payment_id": p.id, "reason": "  "})
    assert_error(status, body, "VALIDATION_ERROR", 422)
    status, body, _ = pay_api.post(url, {"payment_id": p.id, "reason": "ab"})
    assert_error(status, body, "VALIDATION_ERROR", 422)
    assert body["details"]["reason"] == "Text should have at least 3 characters"
    status, body, _ = pay_api.post(url, {"payment_id": "1", "reason": "string id"})
    assert_error(status, body, "VALIDATION_ERROR", 422)
    _, plain = make.api_key(scopes=["customers:read"])
    status, body, _ = ApiClient(pay_app, plain).post(url, {"payment_id": p.id, "reason": "scope"})
    assert_error(status, body, "AUTH_FORBIDDEN", 403)
    status, body, _ = pay_api.post(url, {"payment_id": p.id, "reason": "all of it"})
    assert status == 201 and body["data"]["credits"] == 1000
    status, body, _ = pay_api.post(url, {"payment_id": p.id, "reason": "again"})
    assert_error(status, body, "REFUND_NOT_ELIGIBLE", 409)
    assert "in progress" in body["error"]
