"""The sandbox: play the customer of a local provider double (docs/payments.md, "Sandbox").

`pay` completes a Stripe Checkout Session or a Razorpay order that Creditdesk started, at the
double (so SDK reads see it paid), then sends the product's own webhook URL the deliveries the
real provider would send, signed with its scheme and the configured webhook secret: Stripe
`checkout.session.completed` (and `invoice.paid` for a subscription), Razorpay
`payment.captured` and `order.paid`. `refund` refunds a paid payment at the double and sends
Stripe `refund.created` + `charge.refunded` or Razorpay `refund.created` + `refund.processed`.
The credits move only through the normal webhook path; this module writes nothing but its
audit row. Every call refuses unless the provider is a local double
(services/providers/sandbox.py).
"""
from __future__ import annotations

import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import requests
from sqlalchemy import select

from models import AuditLog, Customer, Payment
from services.core import audit
from services.core.db import atomic
from services.core.errors import Conflict, NotFound, ServiceError
from services.providers import razorpay as rzp
from services.providers import sandbox as doubles
from services.providers import stripe as stp

log = logging.getLogger("creditdesk.sandbox")

WEBHOOK_PATHS = {"stripe": "/api/webhooks/stripe", "razorpay": "/api/webhooks/razorpay"}
REFUNDABLE = ("paid", "partially_refunded")
TIMEOUT_SECONDS = 30.0
SandboxUnavailable = doubles.SandboxUnavailable


class WebhookNotAccepted(ServiceError, status=502, code="SANDBOX_WEBHOOK_FAILED"):
    """The product's webhook URL did not take a delivery (not running, wrong URL, refused)."""


@dataclass(frozen=True)
class Delivery:
    """One webhook sent and what the product answered."""

    type: str
    http_status: int
    status: str  # the event's status in the answer: processed, ignored, failed, received
    duplicate: bool = False


@dataclass(frozen=True)
class Result:
    provider: str
    action: str  # pay | refund
    payment_id: int
    reference: str  # session / order id (pay), refund id (refund)
    amount_minor: int
    currency: str
    deliveries: list[Delivery] = field(default_factory=list)

    @property
    def summary(self) -> str:
        sent = ", ".join(f"{d.type} → {d.status}" for d in self.deliveries)
        return f"{self.provider} {self.action} of payment #{self.payment_id} ({self.reference}): {sent}"


@dataclass(frozen=True)
class Row:
    """A payment as the sandbox page lists it."""

    payment: Payment
    email: str
    available: bool


def availability() -> dict[str, str | None]:
    """Per provider: None when the sandbox can act for it, else why not."""
    return {p: doubles.unavailable(p) for p in doubles.PROVIDERS}


def any_available() -> bool:
    return doubles.any_available()


def _rows(stmt, limit: int) -> list[Row]:
    with atomic() as s:  # read and end the transaction: nothing is held while HTTP calls run
        found = s.execute(stmt.join(Customer, Customer.id == Payment.customer_id)
                          .add_columns(Customer.email)
                          .order_by(Payment.id.desc()).limit(limit)).all()
        for p, _ in found:
            s.expunge(p)  # plain values for the page, not reloaded row by row after the commit
        return [Row(p, email, doubles.available(p.provider)) for p, email in found]


def pending(*, limit: int = 50) -> list[Row]:
    """Checkouts and orders started here and not paid yet, newest first."""
    return _rows(select(Payment).where(Payment.status == "created",
                                       Payment.provider_order_id.is_not(None),
                                       Payment.kind.in_(("package", "subscription"))), limit)


def refundable(*, limit: int = 50) -> list[Row]:
    """Payments the sandbox paid that have money left to refund, newest first. (Others, such
    as the demo data's, exist in our tables only, not at the doubles: `refund` by reference
    still tries them and reports what the double answers.)"""
    with atomic() as s:
        ids = {int(t) for t in s.scalars(
            select(AuditLog.target_id).where(AuditLog.action == "sandbox.pay")
            .order_by(AuditLog.created_at.desc()).limit(limit * 4)) if t and t.isdigit()}
    return _rows(select(Payment).where(Payment.id.in_(ids), Payment.status.in_(REFUNDABLE),
                                       Payment.provider_payment_id.is_not(None)), limit)


def find(*, reference: str) -> Payment:
    """Our payment by its id, provider order/session id or provider payment id."""
    ref = (reference or "").strip()
    if not ref:
        raise NotFound("Give a Checkout Session id, Razorpay order id, payment id or our payment id.")
    with atomic() as s:
        if ref.isdigit():
            found = s.get(Payment, int(ref))
        else:
            found = s.scalar(select(Payment).where(
                (Payment.provider_order_id == ref) | (Payment.provider_payment_id == ref))
                .order_by(Payment.id).limit(1))
        if found is None:
            raise NotFound(f"No payment started here matches {ref!r}.")
        s.expunge(found)
        return found


# --- paying ----------------------------------------------------------------------------------

def pay(*, reference: str, webhook_base: str, staff=None, ip: str | None = None) -> Result:
    """Pay a pending Checkout Session / order at the double, then deliver its webhooks."""
    payment = find(reference=reference)
    doubles.require(payment.provider)
    if payment.status != "created" or not payment.provider_order_id:
        raise Conflict(f"Payment #{payment.id} is {payment.status}: only a started, unpaid "
                       "checkout or order can be paid.")
    if payment.provider == "stripe":
        events = _pay_stripe(payment.provider_order_id)
    else:
        events = _pay_razorpay(payment.provider_order_id)
    deliveries = [_deliver(payment.provider, e, webhook_base) for e in events]
    result = Result(payment.provider, "pay", payment.id, payment.provider_order_id,
                    payment.amount_minor, payment.currency, deliveries)
    _audit(result, staff=staff, ip=ip)
    return result


def _pay_stripe(session_id: str) -> list[dict]:
    session = stp.retrieve_checkout_session(session_id)
    if session.get("status") != "open":
        raise Conflict(f"Checkout Session {session_id} is {session.get('status')} at the double: "
                       "it cannot be paid again.")
    doubles.stripe_pay_checkout(session)
    session = stp.retrieve_checkout_session(session_id)
    events = [_stripe_event("checkout.session.completed", session)]
    if session.get("mode") == "subscription" and session.get("invoice"):
        invoice = stp.retrieve_invoice(session["invoice"])
        invoice.pop("payments", None)  # an includable field: webhooks never carry it
        events.append(_stripe_event("invoice.paid", invoice))
    return events


def _pay_razorpay(order_id: str) -> list[dict]:
    order = rzp.fetch_order(order_id)
    if order.get("status") == "paid":
        raise Conflict(f"Razorpay order {order_id} is already paid at the double.")
    checkout = doubles.razorpay_pay_order(order_id)
    pay = rzp.fetch_payment(checkout["razorpay_payment_id"])
    order = rzp.fetch_order(order_id)
    return [_razorpay_event("payment.captured", {"payment": pay}),
            _razorpay_event("order.paid", {"payment": pay, "order": order})]


# --- refunding -------------------------------------------------------------------------------

def refund(*, reference: str, webhook_base: str, amount_minor: int | None = None, staff=None,
           ip: str | None = None) -> Result:
    """Refund a paid payment at the double (all that is left by default), as if from the
    provider's dashboard, then deliver the refund webhooks."""
    payment = find(reference=reference)
    doubles.require(payment.provider)
    if payment.status not in REFUNDABLE or not payment.provider_payment_id:
        raise Conflict(f"Payment #{payment.id} is {payment.status}: only a paid payment can be "
                       "refunded.")
    if amount_minor is not None and amount_minor < 1:
        raise Conflict("The refund amount must be a positive number of minor units.")
    if payment.provider == "stripe":
        refund_id, amount, events = _refund_stripe(payment, amount_minor)
    else:
        refund_id, amount, events = _refund_razorpay(payment, amount_minor)
    deliveries = [_deliver(payment.provider, e, webhook_base) for e in events]
    result = Result(payment.provider, "refund", payment.id, refund_id, amount, payment.currency,
                    deliveries)
    _audit(result, staff=staff, ip=ip)
    return result


def _refund_key(ref: str, before: int, amount: int) -> str:
    # The same click twice (same payment, same state, same amount) is the same refund.
    return f"sandbox-refund-{ref}-{before}-{amount}"


def _refundable(payment: Payment, paid: dict, amount: int | None) -> tuple[int, int]:
    """(refunded before, amount to refund now: the rest when not given) of a provider payment
    object (Stripe charge, Razorpay payment); 409 when nothing is left."""
    before = int(paid.get("amount_refunded") or 0)
    left = int(paid["amount"]) - before
    if left <= 0:
        raise Conflict(f"Payment #{payment.id} is already fully refunded at the double.")
    return before, left if amount is None else amount


def _refund_stripe(payment: Payment, amount: int | None) -> tuple[str, int, list[dict]]:
    pi = stp.retrieve_payment_intent(payment.provider_payment_id)
    charge = stp.retrieve_charge(pi["latest_charge"])
    before, amount = _refundable(payment, charge, amount)
    made = stp.create_refund(payment_intent=pi["id"], amount_minor=amount,
                             idempotency_key=_refund_key(pi["id"], before, amount),
                             metadata={"creditdesk_payment_id": payment.id, "source": "sandbox"})
    charge = stp.retrieve_charge(charge["id"])
    return made["id"], amount, [
        _stripe_event("refund.created", made),
        _stripe_event("charge.refunded", charge,
                      previous={"amount_refunded": before, "refunded": False}),
    ]


def _refund_razorpay(payment: Payment, amount: int | None) -> tuple[str, int, list[dict]]:
    pay = rzp.fetch_payment(payment.provider_payment_id)
    before, amount = _refundable(payment, pay, amount)
    made = rzp.create_refund(payment_id=pay["id"], amount_minor=amount,
                             idempotency_key=_refund_key(pay["id"], before, amount),
                             notes={"creditdesk_payment_id": payment.id, "source": "sandbox"})
    pay = rzp.fetch_payment(pay["id"])
    events = [_razorpay_event("refund.created", {"refund": made, "payment": pay})]
    if made.get("status") == "processed":
        events.append(_razorpay_event("refund.processed", {"refund": made, "payment": pay}))
    return made["id"], amount, events


# --- the deliveries --------------------------------------------------------------------------

def _stripe_event(type_: str, obj: dict, *, previous: dict | None = None) -> dict:
    data: dict[str, Any] = {"object": obj}
    if previous is not None:
        data["previous_attributes"] = previous
    return {"id": "evt_" + secrets.token_hex(12), "object": "event",
            "api_version": doubles.stripe_api_version(), "created": int(time.time()),
            "data": data, "livemode": False, "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None}, "type": type_}


def _razorpay_event(type_: str, entities: dict[str, dict]) -> dict:
    return {"entity": "event", "account_id": "acc_sandbox", "event": type_,
            "contains": list(entities),
            "payload": {name: {"entity": e} for name, e in entities.items()},
            "created_at": int(time.time())}


def _deliver(provider: str, event: dict, webhook_base: str) -> Delivery:
    """POST one signed event to the product's webhook URL, as the provider would."""
    body = json.dumps(event, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "Creditdesk-Sandbox/1.0"}
    if provider == "stripe":
        headers["Stripe-Signature"] = doubles.stripe_signature(body)
        type_ = event["type"]
    else:
        headers["X-Razorpay-Signature"] = doubles.razorpay_signature(body)
        headers["X-Razorpay-Event-Id"] = "evt_" + secrets.token_hex(7)
        type_ = event["event"]
    url = webhook_base.rstrip("/") + WEBHOOK_PATHS[provider]
    try:
        resp = requests.post(url, data=body, headers=headers, timeout=TIMEOUT_SECONDS)
    except requests.RequestException as err:
        raise WebhookNotAccepted(f"Could not deliver {type_} to {url} ({type(err).__name__}); "
                                 "is Creditdesk running there? Set SANDBOX_WEBHOOK_URL or "
                                 "--url.") from None
    try:
        answer = resp.json()
    except ValueError:
        answer = {}
    data = answer.get("data", answer) if isinstance(answer, dict) else {}
    if resp.status_code != 200:
        reason = (answer.get("error") or {}).get("message") if isinstance(answer, dict) else None
        raise WebhookNotAccepted(f"{url} answered {type_} with HTTP {resp.status_code}"
                                 + (f": {reason}" if reason else "") + ".")
    log.info("sandbox.delivered", extra={"provider": provider, "type": type_,
                                          "status": data.get("status")})
    return Delivery(type_, resp.status_code, str(data.get("status") or "?"),
                    bool(data.get("duplicate")))


def _audit(result: Result, *, staff, ip: str | None) -> None:
    with atomic():
        audit.record(action=f"sandbox.{result.action}", staff=staff,
                     actor=None if staff is not None else "cli",
                     target_type="payment", target_id=result.payment_id,
                     after={"provider": result.provider, "reference": result.reference,
                            "amount_minor": result.amount_minor, "currency": result.currency,
                            "webhooks": [f"{d.type}:{d.status}" for d in result.deliveries]},
                     reason="sandbox: simulated customer", ip=ip)
