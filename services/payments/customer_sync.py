"""The product's user lifecycle (seed 002): `POST /api/webhooks/customers`.

The product backend signs each delivery with CUSTOMER_WEBHOOK_SECRET:
`X-Creditdesk-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`,
checked in constant time with a 300 s tolerance either way (several `v1=` entries are accepted,
for secret rotation). Without a secret configured every delivery is refused (500
CUSTOMER_WEBHOOK_MISCONFIGURED): an unsigned door into customer data is never open.

Body: `{"id": "evt_..", "type": "customer.created|customer.updated|customer.deleted",
"created": <unix>?, "data": {"external_id", "email"?, "name"?, "plan"?, "credit_delta"?,
"credits_remaining"?, "reason"?}}` (camelCase `creditDelta`/`creditsRemaining` too). One
transaction per event: the upsert (or soft delete, which keeps the ledger) and the optional
adjustment commit together or not at all: `credit_delta` moves the balance by that much,
`credits_remaining` sets it (one adjustment entry up or down, computed under the account lock);
both are ledger-keyed `customer-webhook:<event id>`. Idempotent by event id: a redelivery of a
processed event changes nothing.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass
from typing import Annotated

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)
from sqlalchemy import select

from models import Customer, WebhookEvent, utcnow
from services.core.db import atomic
from services.core.errors import InvalidSignature, ServiceError, ValidationFailed
from services.ledger import customers
from services.ledger import posting as ledger
from services.ledger.rules import Actor
from services.payments.subscriptions import from_unix
from services.payments.webhooks import FINISHED, record

log = logging.getLogger("creditdesk.customer_sync")

TOLERANCE_SECONDS = 300
EVENT_TYPES = ("customer.created", "customer.updated", "customer.deleted")
MAX_DELTA = 10**9


class WebhookMisconfigured(ServiceError):
    """CUSTOMER_WEBHOOK_SECRET is not set: customer webhooks are refused until it is."""
    status, code = 500, "CUSTOMER_WEBHOOK_MISCONFIGURED"


Text = Annotated[str, StringConstraints(strip_whitespace=True, max_length=320)]


class CustomerData(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    external_id: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]
    email: Text | None = None
    name: Annotated[str, StringConstraints(max_length=200)] | None = None
    plan: Annotated[str, StringConstraints(max_length=64)] | None = None
    credit_delta: int | None = Field(default=None, ge=-MAX_DELTA, le=MAX_DELTA,
                                     validation_alias=AliasChoices("credit_delta", "creditDelta"))
    # The balance the product wants the customer to have: one adjustment entry up or down.
    credits_remaining: int | None = Field(
        default=None, ge=0, le=MAX_DELTA,
        validation_alias=AliasChoices("credits_remaining", "creditsRemaining"))
    reason: Annotated[str, StringConstraints(max_length=500)] | None = None

    @model_validator(mode="after")
    def _one_way_to_move_credits(self) -> CustomerData:
        if self.credit_delta is not None and self.credits_remaining is not None:
            raise ValueError("send credit_delta or credits_remaining, not both")
        return self


class CustomerEvent(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    type: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    created: int | None = Field(default=None, ge=0, le=2**40)
    data: CustomerData


@dataclass(frozen=True)
class SyncResult:
    event_id: str
    type: str
    status: str  # processed | ignored
    duplicate: bool = False
    customer_id: int | None = None
    balance: int | None = None

    def as_dict(self) -> dict:
        return {"received": True, "event_id": self.event_id, "type": self.type,
                "status": self.status, "duplicate": self.duplicate, "balance": self.balance}


def verify_signature(*, body: bytes, header: str | None, secret: str | None,
                     now: float | None = None) -> None:
    """Check `X-Creditdesk-Signature` (timestamped HMAC-SHA256, 300 s tolerance)."""
    if not secret:
        raise WebhookMisconfigured("CUSTOMER_WEBHOOK_SECRET is not set; customer webhooks are refused.")
    if not header:
        raise InvalidSignature("Missing X-Creditdesk-Signature header.")
    stamp, candidates = None, []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            stamp = value
        elif name == "v1":
            candidates.append(value)
    # ASCII and short: "²".isdigit() is true, and int() refuses it or 5,000 digits (a 500).
    if not stamp or not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12) or not candidates:
        raise InvalidSignature("Malformed X-Creditdesk-Signature header.")
    if abs((time.time() if now is None else now) - int(stamp)) > TOLERANCE_SECONDS:
        raise InvalidSignature("The signature timestamp is outside the 300 s tolerance.")
    expected = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(expected.encode(), c.strip().encode()) for c in candidates):
        raise InvalidSignature("Invalid X-Creditdesk-Signature.")


def parse_event(body: bytes) -> CustomerEvent:
    try:
        raw = json.loads(body)
        return CustomerEvent.model_validate(raw)
    except ValueError as err:
        details = {".".join(str(p) for p in e["loc"]) or "body": e["msg"]
                   for e in err.errors(include_url=False)} \
            if isinstance(err, ValidationError) else {"body": "invalid JSON"}
        raise ValidationFailed("The customer event is invalid.", details=details) from None


def receive(*, body: bytes, header: str | None, secret: str | None) -> SyncResult:
    """Verify, store and apply one customer event (once per event id)."""
    verify_signature(body=body, header=header, secret=secret)
    event = parse_event(body)
    row_id, status = record(provider="customers", event_id=event.id, type_=event.type,
                            payload=body.decode("utf-8", "replace"))
    if status in FINISHED:
        return SyncResult(event.id, event.type, status, duplicate=True)
    try:
        return apply_event(row_id, event)
    except ServiceError as err:
        with atomic() as s:
            row = s.get(WebhookEvent, row_id)
            if row.status not in FINISHED:
                row.status, row.error, row.attempts = "failed", str(err)[:2000], row.attempts + 1
        log.warning("customer_sync.failed", extra={"event_id": event.id, "error": str(err)})
        raise


def apply_event(row_id: int, event: CustomerEvent) -> SyncResult:
    d = event.data
    actor = Actor("webhook", f"customers:{event.id}"[:64])
    with atomic() as s:
        row = s.scalar(select(WebhookEvent).where(WebhookEvent.id == row_id).with_for_update()
                       .execution_options(populate_existing=True))
        if row.status in FINISHED:
            return SyncResult(event.id, event.type, row.status, duplicate=True)
        row.attempts = row.attempts + 1
        status, note, customer = _change(s, event, actor)
        row.status, row.error, row.processed_at = status, note, utcnow()
        balance = ledger.balance(customer.id) if customer is not None else None
        log.info("customer_sync.applied", extra={"event_id": event.id, "type": event.type,
                                                 "status": status, "external_id": d.external_id})
        return SyncResult(event.id, event.type, status, customer_id=customer and customer.id,
                          balance=balance)


def _change(s, event: CustomerEvent, actor: Actor) -> tuple[str, str | None, Customer | None]:
    d = event.data
    c = s.scalar(select(Customer).where(Customer.external_id == d.external_id)
                 .with_for_update(of=Customer).execution_options(populate_existing=True))
    if event.type not in EVENT_TYPES:
        return "ignored", f"event type {event.type} is not used", None
    if event.type == "customer.deleted":
        if c is None:
            return "ignored", "unknown customer", None
        customers.soft_delete(external_id=d.external_id)
        return "processed", None, None
    if c is not None and c.deleted_at is not None:
        sent = from_unix(event.created)
        if event.type == "customer.updated" or (sent is not None and sent <= c.deleted_at):
            return "ignored", "the customer was deleted after this event", None
    email = d.email or (c.email if c is not None else None)
    if not email:
        raise ValidationFailed("data.email is required for a new customer.",
                               details={"data.email": "required"})
    name = d.name if d.name is not None else (c.name if c is not None else "")
    customer, _ = customers.upsert(external_id=d.external_id, email=email, name=name,
                                   plan_code=d.plan or None)
    delta, why = d.credit_delta, f"{event.type} credit_delta"
    if d.credits_remaining is not None:
        # Under the account lock, after the due expiries: the balance the delta starts from is
        # the one the customer can spend, and nothing moves it before this transaction ends.
        account = ledger.lock_account(s, customer_id=customer.id)
        ledger.expire_due(s, account, utcnow(), actor)
        delta, why = d.credits_remaining - account.balance, \
            f"{event.type} credits_remaining={d.credits_remaining}"
    if delta:
        ledger.adjust(customer_id=customer.id, credits=delta, actor=actor, reason=d.reason or why,
                      key=f"customer-webhook:{event.id}")
    return "processed", None, customer


__all__ = ["receive", "verify_signature", "WebhookMisconfigured", "TOLERANCE_SECONDS"]
