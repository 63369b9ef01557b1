"""Write an outbound event with the change that causes it.

`emit` only adds a row to the caller's open transaction (it never commits): a rollback of the
change drops the event, a commit keeps both; a crash between the commit and the delivery loses
nothing, because delivery reads the table. The event's `event_id` is the Standard Webhooks
`webhook-id`, the same on every delivery attempt to every endpoint.
"""
from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.orm import Session

from models import Customer, OutboxEvent, db
from services.core.errors import ValidationFailed

# Every event type the product can subscribe to, with what its `data` carries
# (docs/webhooks.md has an example of each).
EVENT_TYPES = {
    "credits.low_balance": "the balance crossed below the customer's threshold",
    "credits.depleted": "the balance reached 0",
    "grant.created": "credits were granted (purchase, plan, distribution, adjustment)",
    "grant.expiring": "a grant's remaining credits expire within the notice period",
    "payment.succeeded": "a payment was captured and its credits granted",
    "refund.processed": "a refund was processed at the provider and its credits reversed",
    "task.finished": "a prepaid task ended (succeeded, failed, timed out or cancelled)",
    "auto_topup.succeeded": "an automatic top-up was paid and its credits granted",
    "auto_topup.failed": "an automatic top-up charge was declined or failed",
}


def new_event_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def emit(type_: str, data: dict, *, customer_id: int | None = None,
         external_id: str | None = None, session: Session | None = None,
         at: datetime | None = None) -> OutboxEvent:
    """Add one event to the open transaction. `data` must be JSON; `external_id` (the product's
    customer id, looked up from `customer_id` when not given) is added to it, so every customer
    event carries it."""
    if type_ not in EVENT_TYPES:
        raise ValidationFailed(f"unknown event type {type_!r}")
    payload = dict(data)
    if external_id is None and customer_id is not None:
        external_id = external_id_of(session or db.session, customer_id)
    if external_id is not None:
        payload.setdefault("external_id", external_id)
    event = OutboxEvent(event_id=new_event_id(), type=type_, customer_id=customer_id,
                        data=payload)
    if at is not None:
        event.created_at = at
    (session or db.session).add(event)
    return event


def external_id_of(s: Session, customer_id: int) -> str | None:
    """The product's id of a customer (from the session's identity map when it is loaded)."""
    c = s.get(Customer, customer_id)
    return c.external_id if c is not None else None
