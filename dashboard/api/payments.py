"""Purchases over the API: start a Stripe Checkout or a Razorpay order; verify a Razorpay payment."""
from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Literal

from flask import Blueprint, g
from pydantic import BaseModel, Field, StrictInt, StrictStr, model_validator

from dashboard.api.auth import api_key_required
from dashboard.api.core import MAX_SAFE_INT, describe, ok, parse, path_text
from dashboard.api.idempotency import idempotent
from dashboard.api.schemas import Body
from services.payments import purchases

bp = Blueprint("api_payments", __name__, url_prefix="/api/v1")

CatalogId = Annotated[StrictInt, Field(gt=0, le=MAX_SAFE_INT)]
ReturnUrl = Annotated[StrictStr, Field(max_length=2000, pattern=r"^https?://\S+$",
                                       description="where Stripe Checkout sends the buyer back")]
ProviderId = Annotated[StrictStr, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_\-]+$")]


class PurchaseIn(Body):
    provider: Literal["stripe", "razorpay"]
    package_id: CatalogId | None = Field(None, description="a credit package (one-off purchase)")
    plan_id: CatalogId | None = Field(None, description="a monthly or yearly plan (Stripe only)")
    success_url: ReturnUrl | None = None
    cancel_url: ReturnUrl | None = None

    @model_validator(mode="after")
    def _one_item(self):
        if (self.package_id is None) == (self.plan_id is None):
            raise ValueError("give exactly one of package_id or plan_id")
        return self


class PurchaseOut(BaseModel):
    provider: Literal["stripe", "razorpay"]
    payment_id: int = Field(description="Creditdesk's id of this payment")
    checkout_url: str | None = Field(None, description="stripe: send the buyer here")
    session_id: str | None = Field(None, description="stripe: the Checkout Session id")
    order_id: str | None = Field(None, description="razorpay: open Checkout with this order")
    key_id: str | None = Field(None, description="razorpay: the public key id for Checkout")
    amount: int | None = Field(None, description="razorpay: minor units")
    currency: str | None = None
    credits: int | None = Field(None, description="razorpay: credits the package grants")


class VerifyIn(Body):
    order_id: ProviderId
    payment_id: ProviderId
    signature: Annotated[StrictStr, Field(min_length=1, max_length=256)]


class VerifyOut(BaseModel):
    credits_balance: int
    credits_added: int
    payment_id: int = Field(description="Creditdesk's id of this payment")


@bp.post("/customers/<external_id>/purchases")
@describe(summary="Start a purchase: Stripe Checkout Session or Razorpay order", body=PurchaseIn,
          response=PurchaseOut, status=201, scopes=("payments:write",), idempotent=True,
          errors=("CUSTOMER_NOT_FOUND", "NOT_FOUND", "PAYMENT_PROVIDER_ERROR",
                  "IDEMPOTENCY_KEY_REUSED", "IDEMPOTENCY_KEY_IN_USE"), tag="payments",
          description="""stripe answers {checkout_url, session_id} (mode payment for a package,
              subscription for a plan); razorpay answers {order_id, key_id, amount, currency, credits}.
              Nothing is credited here: credits follow the provider's confirmation (webhook or
              /payments/razorpay/verify). A provider failure is 502 PAYMENT_PROVIDER_ERROR (retryable).""")
@api_key_required("payments:write")
@idempotent
def purchase(external_id: str):
    body = parse(PurchaseIn)
    result = purchases.start(external_id=path_text(external_id), provider=body.provider,
                             package_id=body.package_id, plan_id=body.plan_id,
                             success_url=body.success_url, cancel_url=body.cancel_url,
                             actor=g.actor)
    return ok({"provider": body.provider, **asdict(result)}, 201)


@bp.post("/payments/razorpay/verify")
@describe(summary="Verify a Razorpay Checkout payment and grant its credits (once)",
          body=VerifyIn, response=VerifyOut, scopes=("payments:write",), idempotent=True,
          errors=("INVALID_SIGNATURE", "NOT_FOUND", "CONFLICT"), tag="payments",
          description="Checks razorpay_signature = HMAC-SHA256(key secret, order_id|payment_id) "
                      "for an order started here, then grants the package credits. Safe to "
                      "repeat: a second call, the payment.captured / order.paid webhook or a "
                      "redelivery answers the same credits_added and never credits twice.")
@api_key_required("payments:write")
@idempotent
def verify_razorpay():
    body = parse(VerifyIn)
    settled = purchases.verify_razorpay(order_id=body.order_id, payment_id=body.payment_id,
                                        signature=body.signature, actor=g.actor)
    return ok({"credits_balance": settled.credits_balance,
               "credits_added": settled.credits_added, "payment_id": settled.payment_id})
