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
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models import WebhookEvent, db, utcnow
from services import purchases, refunds, subscriptions
from services.db import atomic
from services.errors import PaymentProviderError, ServiceError, ValidationFailed
from services.ledger import Actor
from services.providers import razorpay as rzp
from services.providers import stripe as stp

log = logging.getLogger("creditdesk.webhooks")

FINISHED = ("processed", "ignored")
STRIPE_REFUND_TYPES = ("charge.refunded",)
RAZORPAY_REFUND_TYPES = ("refund.processed",)


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


class _Pending(Exception):
    """The event refers to a payment not known yet; keep it `received` and apply it later."""


# --- entry points ------------------------------------------------------------------------------

def receive_stripe(*, body: bytes, signature: str | None) -> Outcome:
    """A Stripe delivery: `Stripe-Signature` checked by the SDK (300 s tolerance)."""
    event = stp.construct_event(body, signature)
    return _receive("stripe", str(event.get("id") or ""), str(event.get("type") or ""), body, event)


def receive_razorpay(*, body: bytes, signature: str | None, event_id: str | None) -> Outcome:
    """A Razorpay delivery: `X-Razorpay-Signature` over the raw body, event id from its header."""
    rzp.verify_webhook_signature(body=body, signature=signature)
    event = _json(body)
    # Razorpay always sends X-Razorpay-Event-Id; without it the body itself names the event.
    eid = (event_id or "").strip() or "sha256:" + hashlib.sha256(body).hexdigest()[:56]
    return _receive("razorpay", eid, str(event.get("event") or ""), body, event)


def _json(body: bytes) -> dict:
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
                except _Pending as wait:
                    status, note = "received", str(wait)
                row.status, row.error = status, note
                row.processed_at = utcnow() if status in FINISHED else None
            log.info("webhooks.processed", extra={"provider": provider, "event_id": event_id,
                                                  "type": type_, "status": status})
            return Outcome(provider, event_id, type_, status, error=note)
        except IntegrityError:
            if attempt == 2:  # two first deliveries raced on a UNIQUE row three times: give up
                _fail(row_id, "conflicting concurrent deliveries")
                raise
        except (ServiceError, KeyError, TypeError, ValueError) as err:
            # A business failure or a signed yet malformed event: a retry cannot help.
            if not isinstance(err, ServiceError):
                err = ValidationFailed(f"malformed {type_} event: {type(err).__name__} {err}")
            _fail(row_id, str(err))
            log.warning("webhooks.failed", extra={"provider": provider, "event_id": event_id,
                                                  "type": type_, "error": str(err)})
            return Outcome(provider, event_id, type_, "failed", error=str(err))
        except Exception as err:
            _fail(row_id, f"{type(err).__name__}: {err}"[:2000])
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


def _fail(row_id: int, error: str) -> None:
    with atomic() as s:
        row = _lock_event(s, row_id)
        if row.status not in FINISHED:
            row.status, row.error = "failed", error[:2000]
            row.attempts = row.attempts + 1


def _pending_refunds(s: Session, provider: str, ref: str | None) -> None:
    """Apply refunds that arrived before the payment `ref` was known, now that it is."""
    if not ref:
        return
    types = STRIPE_REFUND_TYPES if provider == "stripe" else RAZORPAY_REFUND_TYPES
    waiting = s.scalars(select(WebhookEvent).where(
        WebhookEvent.provider == provider, WebhookEvent.status == "received",
        WebhookEvent.type.in_(types), WebhookEvent.payload.contains(ref))
        # Rows another delivery is working on are skipped: it applies them itself.
        .with_for_update(skip_locked=True).order_by(WebhookEvent.id)).all()
    for row in waiting:
        handler = HANDLERS[(provider, row.type)]
        try:
            actor = Actor("webhook", f"{provider}:{row.event_id}"[:64])
            status, note = handler(s, json.loads(row.payload), actor, None)
        except _Pending:
            continue
        row.status, row.error, row.processed_at = status, note, utcnow()
        row.attempts = row.attempts + 1


# --- Stripe ------------------------------------------------------------------------------------

def _obj(event: dict) -> dict:
    return (event.get("data") or {}).get("object") or {}


def _at(event: dict):
    return subscriptions.from_unix(event.get("created")) or utcnow()


def _tags(obj: dict) -> dict:
    md = obj.get("metadata")
    return md if isinstance(md, dict) else {}


def _stripe_checkout(s: Session, event: dict, actor: Actor, _prepared) -> tuple[str, str | None]:
    session = _obj(event)
    tags = _tags(session)
    payment = purchases.find_payment(
        provider="stripe", order_id=session.get("id"),
        payment_id=tags.get("creditdesk_payment_id") or session.get("client_reference_id"))
    if payment is None:
        return "ignored", "not a Checkout Session started here"
    if session.get("mode") == "subscription":
        if not session.get("subscription"):
            return "ignored", "subscription Checkout without a subscription"
        applied = subscriptions.start_from_checkout(
            payment_id=payment.id, subscription_id=session["subscription"], at=_at(event), actor=actor)
        return "processed", None if applied else "older than the subscription state applied"
    if session.get("payment_status") != "paid":
        return "ignored", "not paid yet; waiting for checkout.session.async_payment_succeeded"
    ref = session.get("payment_intent") or session["id"]
    purchases.settle(payment_id=payment.id, provider_payment_id=ref,
                     amount_minor=session.get("amount_total"), currency=session.get("currency"),
                     order_id=session.get("id"), actor=actor)
    _pending_refunds(s, "stripe", ref)
    return "processed", None


def _invoice_fields(invoice: dict) -> tuple[str | None, dict, str | None, dict]:
    """(subscription id, our tags, price id, period) in the current and the older layouts."""
    details = ((invoice.get("parent") or {}).get("subscription_details") or {})
    sub = details.get("subscription") or invoice.get("subscription")
    if isinstance(sub, dict):
        sub = sub.get("id")
    tags = details.get("metadata") or invoice.get("subscription_details", {}).get("metadata") or {}
    lines = ((invoice.get("lines") or {}).get("data") or [{}])
    line = lines[0]
    price = ((line.get("pricing") or {}).get("price_details") or {}).get("price") \
        or (line.get("price") or {}).get("id")
    return sub, tags if isinstance(tags, dict) else {}, price, line.get("period") or {}


def _stripe_invoice_payment_intent(event: dict) -> str | None:
    """The PaymentIntent of a paid invoice (needed to map a later refund); one API call."""
    invoice = _obj(event)
    if invoice.get("payment_intent"):  # older API versions
        pi = invoice["payment_intent"]
        return pi.get("id") if isinstance(pi, dict) else pi
    try:
        full = stp.retrieve_invoice(invoice["id"])
    except (PaymentProviderError, KeyError):
        log.warning("webhooks.stripe.invoice_payment_unknown", extra={"invoice": invoice.get("id")})
        return None
    for p in ((full.get("payments") or {}).get("data") or []):
        pi = (p.get("payment") or {}).get("payment_intent")
        if pi and p.get("status") in (None, "paid"):
            return pi.get("id") if isinstance(pi, dict) else pi
    return None


def _stripe_invoice_paid(s: Session, event: dict, actor: Actor, pi: str | None) -> tuple[str, str | None]:
    invoice = _obj(event)
    sub, tags, price, period = _invoice_fields(invoice)
    result = subscriptions.apply_invoice(
        invoice_id=invoice["id"], subscription_id=sub, metadata=tags,
        billing_reason=invoice.get("billing_reason"), amount_paid=int(invoice.get("amount_paid") or 0),
        currency=invoice.get("currency") or "usd", price_id=price,
        period_start=subscriptions.from_unix(period.get("start")),
        period_end=subscriptions.from_unix(period.get("end")), provider_payment_id=pi,
        at=_at(event), actor=actor)
    if result is None:
        return "ignored", "not a subscription sold here"
    _pending_refunds(s, "stripe", pi)
    return "processed", None


def _stripe_subscription(s: Session, event: dict, actor: Actor, _prepared) -> tuple[str, str | None]:
    sub = _obj(event)
    items = ((sub.get("items") or {}).get("data") or [{}])
    item = items[0]
    period_end = item.get("current_period_end") or sub.get("current_period_end")
    applied = subscriptions.apply_status(
        subscription_id=sub["id"], stripe_status=sub.get("status") or "",
        metadata=_tags(sub), price_id=(item.get("price") or {}).get("id"),
        period_end=subscriptions.from_unix(period_end), at=_at(event),
        deleted=event.get("type") == "customer.subscription.deleted")
    if applied is None:
        return "ignored", "not a subscription sold here"
    return "processed", None if applied else "older than the subscription state applied"


def _stripe_charge_refunded(s: Session, event: dict, actor: Actor, _prepared) -> tuple[str, str | None]:
    charge = _obj(event)
    pi = charge.get("payment_intent")
    pi = pi.get("id") if isinstance(pi, dict) else pi
    payment = purchases.find_payment(provider="stripe", payment_ref=pi,
                                     payment_id=_tags(charge).get("creditdesk_payment_id"))
    if payment is None:
        raise _Pending(f"waiting for payment {pi}")
    if payment.provider_payment_id is None and payment.kind == "package" and charge.get("paid"):
        # The refund overtook checkout.session.completed: the charge proves the payment.
        purchases.settle(payment_id=payment.id, provider_payment_id=pi or charge["id"],
                         amount_minor=charge.get("amount"), currency=charge.get("currency"),
                         actor=actor)
    total = int(charge.get("amount_refunded") or 0)
    before = (event.get("data") or {}).get("previous_attributes") or {}
    amount = total - int(before.get("amount_refunded") or 0) if "amount_refunded" in before \
        else total - payment.refunded_minor
    refund_list = ((charge.get("refunds") or {}).get("data") or [])
    newest = refund_list[0].get("id") if len(refund_list) == 1 else None
    refunds.apply_provider_refund(payment_id=payment.id, refund_key=f"stripe:{charge['id']}:{total}",
                                  amount_minor=max(amount, 0), refunded_total_minor=total,
                                  provider_refund_id=newest, actor=actor)
    return "processed", None


# --- Razorpay ----------------------------------------------------------------------------------

def _entity(event: dict, name: str) -> dict:
    return (((event.get("payload") or {}).get(name) or {}).get("entity")) or {}


def _razorpay_paid(s: Session, event: dict, actor: Actor, _prepared) -> tuple[str, str | None]:
    pay = _entity(event, "payment")
    order_id = pay.get("order_id") or _entity(event, "order").get("id")
    notes = pay.get("notes") if isinstance(pay.get("notes"), dict) else {}
    payment = purchases.find_payment(provider="razorpay", order_id=order_id,
                                     payment_id=notes.get("creditdesk_payment_id"))
    if payment is None or not pay.get("id"):
        return "ignored", "not an order started here"
    purchases.settle(payment_id=payment.id, provider_payment_id=pay["id"],
                     amount_minor=pay.get("amount"), currency=pay.get("currency"),
                     order_id=order_id, actor=actor)
    _pending_refunds(s, "razorpay", pay["id"])
    return "processed", None


def _razorpay_refund(s: Session, event: dict, actor: Actor, _prepared) -> tuple[str, str | None]:
    refund, pay = _entity(event, "refund"), _entity(event, "payment")
    pay_id = refund.get("payment_id") or pay.get("id")
    payment = purchases.find_payment(provider="razorpay", payment_ref=pay_id,
                                     order_id=pay.get("order_id"))
    if payment is None:
        if pay.get("order_id"):
            return "ignored", "not an order started here"
        raise _Pending(f"waiting for payment {pay_id}")
    if payment.provider_payment_id is None and pay.get("captured") and pay_id:
        # The refund overtook payment.captured: the payment entity proves the capture.
        purchases.settle(payment_id=payment.id, provider_payment_id=pay_id,
                         amount_minor=pay.get("amount"), currency=pay.get("currency"),
                         order_id=pay.get("order_id"), actor=actor)
    refunds.apply_provider_refund(
        payment_id=payment.id, refund_key=f"razorpay:{refund.get('id')}",
        amount_minor=int(refund.get("amount") or 0),
        refunded_total_minor=int(pay.get("amount_refunded") or 0),
        provider_refund_id=refund.get("id"), actor=actor)
    return "processed", None


Handler = Callable[[Session, dict, Actor, object], tuple[str, str | None]]

HANDLERS: dict[tuple[str, str], Handler] = {
    ("stripe", "checkout.session.completed"): _stripe_checkout,
    ("stripe", "checkout.session.async_payment_succeeded"): _stripe_checkout,
    ("stripe", "invoice.paid"): _stripe_invoice_paid,
    ("stripe", "customer.subscription.updated"): _stripe_subscription,
    ("stripe", "customer.subscription.deleted"): _stripe_subscription,
    ("stripe", "charge.refunded"): _stripe_charge_refunded,
    ("razorpay", "payment.captured"): _razorpay_paid,
    ("razorpay", "order.paid"): _razorpay_paid,
    ("razorpay", "refund.processed"): _razorpay_refund,
}
# Provider calls an event needs, made before its transaction opens (no lock held meanwhile).
PREPARE: dict[tuple[str, str], Callable[[dict], object]] = {
    ("stripe", "invoice.paid"): _stripe_invoice_payment_intent,
}
EVENT_TYPES = {provider: sorted(t for p, t in HANDLERS if p == provider)
               for provider in ("stripe", "razorpay")}

__all__ = ["receive_stripe", "receive_razorpay", "record", "process", "Outcome", "EVENT_TYPES"]


# --- replay from the dashboard (added by the platform area; additive) ---------------------------

def replay(event_id: int, *, staff=None, ip: str | None = None) -> Outcome:
    """Process a stored event again (one that failed or still waits); finished ones stay as they are.

    `event_id` is our row id. The payload was signature-checked when it arrived, so it is not
    checked again; the ledger keys still make a second credit of one payment impossible.
    """
    from services import audit
    from services.errors import Conflict, NotFound

    ev = db.session.get(WebhookEvent, event_id)
    if ev is None:
        raise NotFound(f"No webhook event {event_id}.")
    if ev.status in FINISHED:
        raise Conflict(f"Event {ev.event_id} is already {ev.status}; there is nothing to replay.")
    before = ev.status
    try:
        if ev.provider == "customers":
            from services import customer_sync  # imports this module: import here, not at the top

            try:
                result = customer_sync._apply(ev.id, customer_sync._parse(ev.payload.encode()))
                outcome = Outcome("customers", ev.event_id, ev.type, result.status)
            except ServiceError as err:
                _fail(ev.id, str(err))
                outcome = Outcome("customers", ev.event_id, ev.type, "failed", error=str(err))
        else:
            outcome = process(ev.id, _json(ev.payload.encode()))
    except ServiceError as err:  # an unreadable payload
        _fail(ev.id, str(err))
        outcome = Outcome(ev.provider, ev.event_id, ev.type, "failed", error=str(err))
    with atomic():
        audit.record(action="webhook.replay", staff=staff, target_type="webhook_event",
                     target_id=event_id, before={"status": before},
                     after={"status": outcome.status, "error": outcome.error}, ip=ip)
    log.info("webhooks.replayed", extra={"provider": ev.provider, "event_id": ev.event_id,
                                          "status": outcome.status})
    return outcome
