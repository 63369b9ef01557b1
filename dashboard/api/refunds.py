"""Refund requests over the API: the product backend files a request (staff approve it in the
dashboard), and reads a customer's refunds. Eligibility is GET .../refund-eligibility."""
from __future__ import annotations

from typing import Annotated, Literal

from flask import Blueprint, g
from pydantic import BaseModel, Field, StrictInt

from dashboard.api import schemas as sc
from dashboard.api.auth import api_key_required
from dashboard.api.core import MAX_SAFE_INT, describe, ok, parse, path_text
from dashboard.api.idempotency import idempotent
from models import Refund
from services.ledger import customers
from services.refunds import listing as refundlist
from services.refunds import requests as refunds

bp = Blueprint("api_refunds", __name__, url_prefix="/api/v1/customers")

Status = Literal["requested", "approved", "processing", "processed", "failed", "rejected"]


class RefundRequestIn(sc.Body):
    payment_id: Annotated[StrictInt, Field(gt=0, le=MAX_SAFE_INT,
                                           description="Creditdesk's payment id (refund-eligibility)")]
    credits: sc.Credits | None = Field(None, description="unused credits to refund; all by default")
    reason: Annotated[sc.Text, Field(min_length=3, max_length=refunds.MAX_REASON)]


class RefundOut(BaseModel):
    refund_id: int
    payment_id: int
    status: Status
    credits: int = Field(description="credits to claw back (clawed back once processed)")
    amount: int = Field(description="money to refund, minor units: credits x cost basis, rounded down")
    currency: str
    reason: str
    provider_refund_id: str | None
    created_at: str | None
    processed_at: str | None


class RefundList(BaseModel):
    refunds: list[RefundOut]


def refund_json(r: Refund) -> dict:
    return {"refund_id": r.id, "payment_id": r.payment_id, "status": r.status, "credits": r.credits,
            "amount": r.amount_minor, "currency": r.currency, "reason": r.reason,
            "provider_refund_id": r.provider_refund_id, "created_at": sc.iso(r.created_at),
            "processed_at": sc.iso(r.processed_at)}


@bp.post("/<external_id>/refunds")
@describe(summary="Request a refund of a purchase's unused credits", body=RefundRequestIn,
          response=RefundOut, status=201, scopes=("payments:write",), idempotent=True,
          errors=("CUSTOMER_NOT_FOUND", "NOT_FOUND", "REFUND_NOT_ELIGIBLE",
                  "IDEMPOTENCY_KEY_REUSED", "IDEMPOTENCY_KEY_IN_USE"), tag="payments",
          description="""Files a request (status requested); finance or an admin approves and processes
              it in the dashboard, where the money is refunded through the provider and the credits are
              clawed back. 409 REFUND_NOT_ELIGIBLE with the reason when the purchase cannot be refunded
              (window, used, already refunded, a refund in progress).""")
@api_key_required("payments:write")
@idempotent
def request_refund(external_id: str):
    body = parse(RefundRequestIn)
    c = customers.get_by_external_id(path_text(external_id))
    key = f"api:{g.api_key.id}:{g.idempotency_key}" if g.get("idempotency_key") else None
    r = refunds.request(payment_id=body.payment_id, customer_id=c.id, credits=body.credits,
                        reason=body.reason, actor=g.actor, key=key)
    return ok(refund_json(r), 201)


@bp.get("/<external_id>/refunds")
@describe(summary="A customer's refunds, newest first (the latest 100)", response=RefundList,
          scopes=("customers:read",), errors=("CUSTOMER_NOT_FOUND",), tag="payments")
@api_key_required("customers:read")
def list_refunds(external_id: str):
    c = customers.get_by_external_id(path_text(external_id))
    rows = refundlist.page(refundlist.Filters(customer=str(c.id)), limit=100).refunds
    return ok({"refunds": [refund_json(r) for r in rows]})


__all__ = ["bp"]
