"""What each Stripe and Razorpay event does, inside the transaction services/webhooks.py opens.

A handler takes (session, event, actor, prepared) and answers (status, note): `processed` or
`ignored` with a reason. It raises `Pending` when the event names a payment not known yet (the
event stays `received` and `apply_pending_refunds` runs it once that payment is settled), and a
ServiceError when the event contradicts our records (the event is marked `failed`). `PREPARE`
holds the provider calls an event needs, made before the transaction opens.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import WebhookEvent, utcnow
from services.core.errors import PaymentProviderError
from services.ledger.rules import Actor
from services.payments import autotopup, autotopup_charge, purchases, subscriptions
from services.providers import stripe as stp
from services.refunds import requests as refunds

log = logging.getLogger("creditdesk.webhooks")

STRIPE_REFUND_TYPES = ("charge.refunded",)
RAZORPAY_REFUND_TYPES = ("refund.processed",)


class Pending(Exception):
    """The event refers to a payment not known yet; keep it `received` and apply it later."""


def apply_pending_refunds(s: Session, provider: str, ref: str | None) -> None:
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
        except Pending:
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


def _stripe_checkout_method(event: dict) -> dict | None:
    """The PaymentIntent of a paid package Checkout that saved its card, with the card
    (one API call). Crediting never waits on it: a failure only leaves the card unsaved."""
    session = _obj(event)
    pi, customer = session.get("payment_intent"), session.get("customer")
    if session.get("mode") != "payment" or not pi or not str(customer or "").startswith("cus_"):
        return None
    try:
        full = stp.retrieve_payment_intent(pi if isinstance(pi, str) else pi.get("id"))
    except PaymentProviderError:
        log.warning("webhooks.stripe.payment_method_unknown", extra={"payment_intent": pi})
        return None
    return full if full.get("setup_future_usage") == "off_session" else None


def _save_method(s: Session, payment, session: dict, pi: dict | None) -> None:
    method = (pi or {}).get("payment_method")
    if not method:
        return
    card = (method.get("card") or {}) if isinstance(method, dict) else {}
    autotopup.save_method(
        s, customer_id=payment.customer_id, stripe_customer_id=session["customer"],
        payment_method_id=method["id"] if isinstance(method, dict) else method,
        brand=card.get("brand"), last4=card.get("last4"), package_id=payment.package_id)


def _stripe_checkout(s: Session, event: dict, actor: Actor, prepared) -> tuple[str, str | None]:
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
    apply_pending_refunds(s, "stripe", ref)
    _save_method(s, payment, session, prepared)
    return "processed", None


def _stripe_payment_intent(s: Session, event: dict, actor: Actor, _prepared) -> tuple[str, str | None]:
    """An off-session auto top-up charge succeeded (the charge answer may have come first)."""
    pi = _obj(event)
    attempt_id = _tags(pi).get("creditdesk_auto_topup_attempt_id")
    if not str(attempt_id or "").isdigit():
        return "ignored", "not an auto top-up (Checkout payments settle by checkout.session.*)"
    done = autotopup_charge.settle(attempt_id=int(attempt_id), payment_intent=pi["id"],
                                   amount_minor=pi.get("amount"), currency=pi.get("currency"),
                                   actor=actor)
    return "processed", None if done else "already settled"


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
    apply_pending_refunds(s, "stripe", pi)
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
        raise Pending(f"waiting for payment {pi}")
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
    apply_pending_refunds(s, "razorpay", pay["id"])
    return "processed", None


def _razorpay_refund(s: Session, event: dict, actor: Actor, _prepared) -> tuple[str, str | None]:
    refund, pay = _entity(event, "refund"), _entity(event, "payment")
    pay_id = refund.get("payment_id") or pay.get("id")
    payment = purchases.find_payment(provider="razorpay", payment_ref=pay_id,
                                     order_id=pay.get("order_id"))
    if payment is None:
        if pay.get("order_id"):
            return "ignored", "not an order started here"
        raise Pending(f"waiting for payment {pay_id}")
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


def _stripe_payment_intent_failed(s: Session, event: dict, actor: Actor,
                                  _prepared) -> tuple[str, str | None]:
    """An auto top-up charge failed (also sent for a decline the charge call already saw)."""
    pi = _obj(event)
    attempt_id = _tags(pi).get("creditdesk_auto_topup_attempt_id")
    if not str(attempt_id or "").isdigit():
        return "ignored", "not an auto top-up"
    err = pi.get("last_payment_error") or {}
    auth = err.get("code") == "authentication_required" or pi.get("status") == "requires_action"
    autotopup_charge.decline(attempt_id=int(attempt_id), provider_ref=pi.get("id"),
                             reason=err.get("decline_code") or err.get("code") or "payment_failed",
                             message=err.get("message"), requires_action=auth)
    return "processed", None


Handler = Callable[[Session, dict, Actor, object], tuple[str, str | None]]

HANDLERS: dict[tuple[str, str], Handler] = {
    ("stripe", "checkout.session.completed"): _stripe_checkout,
    ("stripe", "checkout.session.async_payment_succeeded"): _stripe_checkout,
    ("stripe", "invoice.paid"): _stripe_invoice_paid,
    ("stripe", "customer.subscription.updated"): _stripe_subscription,
    ("stripe", "customer.subscription.deleted"): _stripe_subscription,
    ("stripe", "charge.refunded"): _stripe_charge_refunded,
    ("stripe", "payment_intent.succeeded"): _stripe_payment_intent,
    ("stripe", "payment_intent.payment_failed"): _stripe_payment_intent_failed,
    ("razorpay", "payment.captured"): _razorpay_paid,
    ("razorpay", "order.paid"): _razorpay_paid,
    ("razorpay", "refund.processed"): _razorpay_refund,
}
# Provider calls an event needs, made before its transaction opens (no lock held meanwhile).
PREPARE: dict[tuple[str, str], Callable[[dict], object]] = {
    ("stripe", "invoice.paid"): _stripe_invoice_payment_intent,
    ("stripe", "checkout.session.completed"): _stripe_checkout_method,
    ("stripe", "checkout.session.async_payment_succeeded"): _stripe_checkout_method,
}
EVENT_TYPES = {provider: sorted(t for p, t in HANDLERS if p == provider)
               for provider in ("stripe", "razorpay")}

__all__ = ["HANDLERS", "PREPARE", "EVENT_TYPES", "Pending", "apply_pending_refunds"]
