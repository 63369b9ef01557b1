"""Signed webhooks: Stripe, Razorpay and the product's customer lifecycle (seed 002).

No API key here: each request proves itself with its provider's signature over the raw body,
checked before anything is parsed or written (400 INVALID_SIGNATURE otherwise). Not rate
limited: providers retry throttled deliveries, which would only delay credits.
"""
from __future__ import annotations

from typing import Literal

from flask import Blueprint, current_app, request
from pydantic import BaseModel

from dashboard.api import schemas as sc
from dashboard.api.core import describe, ok
from services.payments import customer_sync, webhooks

bp = Blueprint("api_webhooks", __name__, url_prefix="/api/webhooks")
RATE_LIMIT = None


class WebhookOut(BaseModel):
    received: bool = True
    event_id: str
    type: str
    status: Literal["received", "processed", "ignored", "failed"]
    duplicate: bool = False


class CustomerWebhookOut(WebhookOut):
    balance: int | None = None


@bp.post("/stripe")
@describe(summary="Stripe events (Stripe-Signature, 300 s tolerance)", response=WebhookOut,
          body=sc.StripeEvent, headers=sc.StripeHeaders, auth="signature", tag="webhooks",
          description="""Handles checkout.session.completed, checkout.session.async_payment_succeeded,
              invoice.paid, customer.subscription.updated, customer.subscription.deleted and
              charge.refunded; other types are stored as ignored. A redelivered event id is a no-op
              answered 200.""")
def stripe():
    outcome = webhooks.receive_stripe(body=request.get_data(cache=True),
                                      signature=request.headers.get("Stripe-Signature"))
    return ok(outcome.as_dict())


@bp.post("/razorpay")
@describe(summary="Razorpay events (X-Razorpay-Signature over the raw body)", response=WebhookOut,
          body=sc.RazorpayEvent, headers=sc.RazorpayHeaders, auth="signature", tag="webhooks",
          description="""Handles payment.captured, order.paid and refund.processed, deduplicated by
              X-Razorpay-Event-Id; other types are stored as ignored.""")
def razorpay():
    outcome = webhooks.receive_razorpay(body=request.get_data(cache=True),
                                        signature=request.headers.get("X-Razorpay-Signature"),
                                        event_id=request.headers.get("X-Razorpay-Event-Id"))
    return ok(outcome.as_dict())


@bp.post("/customers")
@describe(summary="Product user lifecycle: customer.created / updated / deleted",
          response=CustomerWebhookOut, auth="signature", body=customer_sync.CustomerEvent,
          headers=sc.CustomerWebhookHeaders,
          errors=("INSUFFICIENT_CREDITS", "CUSTOMER_WEBHOOK_MISCONFIGURED"),
          tag="webhooks",
          description="""X-Creditdesk-Signature: t=<unix>,v1=<hex HMAC-SHA256(CUSTOMER_WEBHOOK_SECRET,
              "<t>.<raw body>")>, 300 s tolerance. Optional data.credit_delta is applied as an
              adjustment in the same transaction. Idempotent by event id. Answers 500
              CUSTOMER_WEBHOOK_MISCONFIGURED while the secret is not set.""")
def customers():
    result = customer_sync.receive(body=request.get_data(cache=True),
                                   header=request.headers.get("X-Creditdesk-Signature"),
                                   secret=current_app.config.get("CUSTOMER_WEBHOOK_SECRET"))
    return ok(result.as_dict())
