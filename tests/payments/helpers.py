"""Helpers of the payment and webhook tests (fixtures pay_app and pay_api: tests/conftest.py).

The provider fakes are real HTTP servers on 127.0.0.1 driven by the real stripe and razorpay
SDKs; webhooks are signed with the providers' own schemes (tests/fakes/signing.py).
"""
from __future__ import annotations

import json

from sqlalchemy import func, select

from models import CreditGrant, LedgerEntry, Payment, Refund, WebhookEvent, db
from tests.conftest import LIVE_SECRETS
from tests.fakes import signing
from tests.helpers import ApiClient

CUSTOMER_SECRET = LIVE_SECRETS["CUSTOMER_WEBHOOK_SECRET"]  # what pay_app configures


def counts() -> dict[str, int]:
    """Rows that a payment or a webhook could write."""
    db.session.rollback()
    return {m.__name__: db.session.scalar(select(func.count()).select_from(m))
            for m in (LedgerEntry, CreditGrant, Payment, Refund, WebhookEvent)}


def grants_of(payment_id: int) -> list[LedgerEntry]:
    db.session.rollback()
    return list(db.session.scalars(select(LedgerEntry).where(
        LedgerEntry.payment_id == payment_id, LedgerEntry.type == "grant")))


def payment(payment_id: int) -> Payment:
    db.session.rollback()
    return db.session.get(Payment, payment_id)


def send_stripe(client, event: dict, secret: str, *, timestamp: int | None = None):
    body, headers = signing.stripe_webhook_request(event, secret, timestamp=timestamp)
    resp = client.post("/api/webhooks/stripe", data=body, headers=headers)
    return resp.status_code, resp.get_json()


def send_razorpay(client, event: dict, secret: str, *, event_id: str | None = None):
    body, headers = signing.razorpay_webhook_request(event, secret, event_id=event_id)
    resp = client.post("/api/webhooks/razorpay", data=body, headers=headers)
    return resp.status_code, resp.get_json()


def send_customer(client, payload: dict, secret: str = CUSTOMER_SECRET, *,
                  timestamp: int | None = None):
    body, headers = signing.customer_webhook_request(payload, secret, timestamp=timestamp)
    resp = client.post("/api/webhooks/customers", data=body, headers=headers)
    return resp.status_code, resp.get_json()


def buy(api: ApiClient, external_id: str, provider: str, **item) -> dict:
    status, body, _ = api.post(f"/api/v1/customers/{external_id}/purchases",
                               {"provider": provider, **item})
    assert status == 201, body
    return body["data"]


def verify(api: ApiClient, order_id: str, payment_id: str, signature: str):
    status, body, _ = api.post("/api/v1/payments/razorpay/verify",
                               {"order_id": order_id, "payment_id": payment_id,
                                "signature": signature})
    return status, body


def event_rows() -> list[tuple[str, str, str]]:
    db.session.rollback()
    return [(e.type, e.status, e.error or "")
            for e in db.session.scalars(select(WebhookEvent).order_by(WebhookEvent.id))]


def dumps(obj) -> str:
    return json.dumps(obj, sort_keys=True)
