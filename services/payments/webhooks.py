"""Payment-provider webhooks: verified, stored, deduplicated by event id, processed idempotently.

Every delivery that passes its signature check is stored as a WebhookEvent (provider, event id,
type, raw payload) in its own short transaction; a bad signature writes nothing. The event is
then processed in one transaction that locks the event row, does the work through the payment
services (which join that transaction) and marks the event `processed` / `ignored`; so a
redelivery of a finished event is a no-op, and concurrent deliveries of one event queue on the
row and the second finds it finished. Money itself is protected a second time by the ledger keys
(`payment:<provider>:<payment id>`, `invoice:stripe:<invoice id>`, claw-back keys), so the
webhook, the Razorpay verify call and a redelivery never credit one payment twice.

A refund reported before its payment is known stays `received` ("waiting for payment") and is
applied when that payment is settled. A business failure (amounts that do not match, say) marks
the event `failed` with the error and is answered 200 (a retry cannot help); anything unexpected
marks it `failed` and is raised, so the provider retries and the retry processes it again.
What each event type does is services/webhook_handlers.py.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models import WebhookEvent, db, utcnow
from services.core.db import atomic
from services.core.errors import ServiceError, ValidationFailed
from services.ledger.rules import Actor
from services.payments.webhook_handlers import EVENT_TYPES, HANDLERS, PREPARE, Pending
from services.providers import razorpay as rzp
from services.providers import stripe as stp

log = logging.getLogger("creditdesk.webhooks")

FINISHED = ("processed", "ignored")


@dataclass(frozen=True)
class Outcome:
    """What became of one delivery."""

    provider: str
    event_id: str
    type: str
    status: str  # received | processed | ignored | failed
    duplicate: bool = False
    error: str | None = None

    def as_dict(self) -> dict:
        return {"received": True, "event_id": self.event_id, "type": self.type,
                "status": self.status, "duplicate": self.duplicate}


# --- entry points ------------------------------------------------------------------------------

def receive_stripe(*, body: bytes, signature: str | None) -> Outcome:
    """A Stripe delivery: `Stripe-Signature` checked by the SDK (300 s tolerance)."""
    event = stp.construct_event(body, signature)
    return _receive("stripe", str(event.get("id") or ""), str(event.get("type") or ""), body, event)


def receive_razorpay(*, body: bytes, signature: str | None, event_id: str | None) -> Outcome:
    """A Razorpay delivery: `X-Razorpay-Signature` over the raw body, event id from its header."""
    rzp.verify_webhook_signature(body=body, signature=signature)
    event = parse_json(body)
    # Razorpay always sends X-Razorpay-Event-Id; without it the body itself names the event.
    eid = (event_id or "").strip() or "sha256:" + hashlib.sha256(body).hexdigest()[:56]
    return _receive("razorpay", eid, str(event.get("event") or ""), body, event)


def parse_json(body: bytes) -> dict:
    try:
        event = json.loads(body)
    except ValueError:
        raise ValidationFailed("The webhook body is not JSON.", details={"body": "invalid JSON"}) \
            from None
    if not isinstance(event, dict):
        raise ValidationFailed("The webhook body is not an event.", details={"body": "not an object"})
    return event


def _receive(provider: str, event_id: str, type_: str, body: bytes, event: dict) -> Outcome:
    if not event_id or not type_:
        raise ValidationFailed("The webhook event has no id or type.", details={"body": "no id/type"})
    row_id, status = record(provider=provider, event_id=event_id, type_=type_,
                            payload=body.decode("utf-8", "replace"))
    if status in FINISHED:
        log.info("webhooks.duplicate", extra={"provider": provider, "event_id": event_id})
        return Outcome(provider, event_id, type_, status, duplicate=True)
    return process(row_id, event)


def record(*, provider: str, event_id: str, type_: str, payload: str) -> tuple[int, str]:
    """Store a delivery once per (provider, event id); answers (row id, its current status)."""
    q = select(WebhookEvent.id, WebhookEvent.status).where(
        WebhookEvent.provider == provider, WebhookEvent.event_id == event_id[:128])
    try:
        with atomic() as s:
            if found := s.execute(q).first():
                return found.id, found.status
            ev = WebhookEvent(provider=provider, event_id=event_id[:128], type=type_[:64],
                              payload=payload, status="received", attempts=0)
            s.add(ev)
            s.flush()
            return ev.id, "received"
    except IntegrityError:  # a concurrent delivery of the same event stored it first
        found = db.session.execute(q).first()
        return found.id, found.status


# --- processing --------------------------------------------------------------------------------

def process(row_id: int, event: dict) -> Outcome:
    """Process one stored event (again, if it failed or waited before)."""
    ev = db.session.get(WebhookEvent, row_id)
    provider, event_id, type_ = ev.provider, ev.event_id, ev.type
    handler = HANDLERS.get((provider, type_))
    actor = Actor("webhook", f"{provider}:{event_id}"[:64])
    if handler is None:
        _finish(row_id, "ignored", f"event type {type_} is not used")
        return Outcome(provider, event_id, type_, "ignored")
    prepared = PREPARE[(provider, type_)](event) if (provider, type_) in PREPARE else None
    for attempt in range(3):
        try:
            with atomic() as s:
                row = _lock_event(s, row_id)
                if row.status in FINISHED:
                    return Outcome(provider, event_id, type_, row.status, duplicate=True)
                row.attempts = row.attempts + 1
                try:
                    status, note = handler(s, event, actor, prepared)
                except Pending as wait:
                    status, note = "received", str(wait)
                row.status, row.error = status, note
                row.processed_at = utcnow() if status in FINISHED else None
            log.info("webhooks.processed", extra={"provider": provider, "event_id": event_id,
                                                  "type": type_, "status": status})
            return Outcome(provider, event_id, type_, status, error=note)
        except IntegrityError:
            if attempt == 2:  # two first deliveries raced on a UNIQUE row three times: give up
                mark_failed(row_id, "conflicting concurrent deliveries")
                raise
        except (ServiceError, KeyError, TypeError, ValueError) as err:
            # A business failure or a signed yet malformed event: a retry cannot help.
            if not isinstance(err, ServiceError):
                err = ValidationFailed(f"malformed {type_} event: {type(err).__name__} {err}")
            mark_failed(row_id, str(err))
            log.warning("webhooks.failed", extra={"provider": provider, "event_id": event_id,
                                                  "type": type_, "error": str(err)})
            return Outcome(provider, event_id, type_, "failed", error=str(err))
        except Exception as err:
            mark_failed(row_id, f"{type(err).__name__}: {err}"[:2000])
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def _lock_event(s: Session, row_id: int) -> WebhookEvent:
    return s.scalar(select(WebhookEvent).where(WebhookEvent.id == row_id).with_for_update()
                    .execution_options(populate_existing=True))


def _finish(row_id: int, status: str, note: str | None) -> None:
    with atomic() as s:
        row = _lock_event(s, row_id)
        if row.status not in FINISHED:
            row.status, row.error, row.processed_at = status, note, utcnow()


def mark_failed(row_id: int, error: str) -> None:
    with atomic() as s:
        row = _lock_event(s, row_id)
        if row.status not in FINISHED:
            row.status, row.error = "failed", error[:2000]
            row.attempts = row.attempts + 1


__all__ = ["receive_stripe", "receive_razorpay", "record", "process", "mark_failed", "parse_json",
           "Outcome", "EVENT_TYPES", "FINISHED"]
