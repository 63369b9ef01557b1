"""Purchases: start a Stripe Checkout or a Razorpay order, and settle a paid payment exactly once.

Money code that talks to a provider follows one shape (../shared/STYLE.md):
1. record our Payment (status `created`, our own id) and commit;
2. call the provider with that id as idempotency key / receipt, holding no row lock;
3. store the provider's order/session id in a second short transaction (or mark it `failed`).

Settlement (`settle`) is shared by the Razorpay verify call, the Razorpay webhooks and Stripe's
`checkout.session.completed`: the payment row is locked, then the account (the lock order used
everywhere payments meet the ledger), and the grant carries the ledger idempotency key
`payment:<provider>:<provider payment id>`. Whoever comes second finds that key and answers the
same grant, so one provider payment is credited once (UNIQUE (provider, provider_payment_id)
and UNIQUE ledger key back this up in the database).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from flask import current_app
from sqlalchemy import select
from sqlalchemy.orm import Session

from models import CreditPackage, Customer, LedgerEntry, Payment, Plan, db, utcnow
from services.catalog import packages as package_prices
from services.core.db import atomic
from services.core.errors import Conflict, CustomerNotFound, NotFound, PaymentProviderError, ValidationFailed
from services.events import outbox
from services.ledger import posting as ledger
from services.ledger.rules import SYSTEM, Actor
from services.payments import autotopup
from services.providers import razorpay as rzp
from services.providers import stripe as stp
from services.refunds import requests as refunds
from services.refunds.requests import lock_payment

PROVIDERS = ("stripe", "razorpay")
SUBSCRIBABLE = ("month", "year")

log = logging.getLogger("creditdesk.purchases")


@dataclass(frozen=True)
class StripeCheckout:
    payment_id: int
    session_id: str
    checkout_url: str


@dataclass(frozen=True)
class RazorpayOrder:
    payment_id: int
    order_id: str
    key_id: str
    amount: int
    currency: str
    credits: int


@dataclass(frozen=True)
class Settled:
    """A payment's credits, granted now or by an earlier call (replay)."""

    payment_id: int
    customer_id: int
    entry_id: int
    credits_added: int
    credits_balance: int
    replay: bool


# --- starting a purchase -----------------------------------------------------------------------

@dataclass(frozen=True)
class _Intent:
    """What the provider call needs, read in the transaction that recorded the payment."""

    payment_id: int
    provider: str
    kind: str
    amount_minor: int
    currency: str
    credits: int
    email: str
    product_name: str
    tags: dict
    price_id: str | None = None
    interval: str = "month"
    customer_id: int | None = None
    package_id: int | None = None
    stripe_customer: str | None = None  # saved by an earlier Checkout (services/payments/autotopup)


def start(*, external_id: str, provider: str, package_id: int | None = None,
          plan_id: int | None = None, success_url: str | None = None,
          cancel_url: str | None = None, actor: Actor = SYSTEM) -> StripeCheckout | RazorpayOrder:
    """Record a payment, then open a Stripe Checkout Session or a Razorpay order for it."""
    if provider not in PROVIDERS:
        raise ValidationFailed("provider must be stripe or razorpay", details={"provider": "unknown"})
    if (package_id is None) == (plan_id is None):
        raise ValidationFailed("Give exactly one of package_id or plan_id.",
                               details={"package_id": "exactly one of package_id, plan_id"})
    intent = _record_intent(external_id=external_id, provider=provider,
                            package_id=package_id, plan_id=plan_id, actor=actor)
    stripe_customer = intent.stripe_customer
    try:
        if provider == "stripe":
            if intent.kind == "package" and stripe_customer is None:
                stripe_customer = _create_stripe_customer(intent)
            result = _open_checkout(intent, success_url, cancel_url, stripe_customer)
            order_id = result.session_id
        else:
            result = _open_order(intent)
            order_id = result.order_id
    except PaymentProviderError as err:
        _mark_failed(intent.payment_id, str(err))
        raise
    with atomic() as s:
        payment = s.get(Payment, intent.payment_id)
        payment.provider_order_id = order_id
    if stripe_customer and stripe_customer != intent.stripe_customer:
        autotopup.remember_stripe_customer(customer_id=intent.customer_id,
                                           stripe_customer_id=stripe_customer,
                                           package_id=intent.package_id)
    log.info("purchases.started", extra={"payment_id": intent.payment_id, "provider": provider,
                                         "provider_order_id": order_id})
    return result


def _record_intent(*, external_id: str, provider: str, package_id: int | None,
                   plan_id: int | None, actor: Actor) -> _Intent:
    with atomic() as s:
        customer = s.scalar(select(Customer).where(Customer.external_id == external_id,
                                                   Customer.deleted_at.is_(None)))
        if customer is None:
            raise CustomerNotFound(f"Customer {external_id} not found.")
        extra: dict = {}
        if package_id is not None:
            package = s.get(CreditPackage, package_id)
            if package is None or not package.active:
                raise NotFound(f"No active credit package {package_id}.")
            # Priced now: a per-credit package follows the current price per credit; the
            # payment keeps what is charged, so a later change never alters it.
            amount = package_prices.effective_price(package, fresh=True)
            if amount is None:
                raise Conflict(f"Package {package.code} is priced per credit and there is no "
                               f"price per credit in {package.currency}; it cannot be sold now.")
            payment = Payment(customer_id=customer.id, provider=provider, kind="package",
                              package_id=package.id, amount_minor=amount,
                              currency=package.currency.upper(), credits=package.credits)
            name = package.name
        else:
            plan = s.get(Plan, plan_id)
            if plan is None or not plan.active:
                raise NotFound(f"No active plan {plan_id}.")
            if provider != "stripe":
                raise ValidationFailed("Plans are sold as Stripe subscriptions; use provider stripe.",
                                       details={"provider": "plans need stripe"})
            if plan.interval not in SUBSCRIBABLE or plan.price_minor <= 0:
                raise ValidationFailed(f"Plan {plan.code} is not sold as a subscription.",
                                       details={"plan_id": "not a paid monthly or yearly plan"})
            payment = Payment(customer_id=customer.id, provider=provider, kind="subscription",
                              plan_id=plan.id, amount_minor=plan.price_minor,
                              currency=plan.currency.upper(), credits=plan.monthly_credits)
            name, extra = plan.name, {"price_id": plan.stripe_price_id, "interval": plan.interval}
        payment.status = "created"
        payment.meta = {"started_by": f"{actor.type}:{actor.id}" if actor.id else actor.type}
        s.add(payment)
        s.flush()
        # Our ids travel on the provider's objects so that every webhook can find the payment.
        tags = {"creditdesk_payment_id": payment.id, "customer_id": customer.id,
                "external_id": customer.external_id}
        tags.update({"package_id": package_id} if package_id is not None else {"plan_id": plan_id})
        return _Intent(payment_id=payment.id, provider=provider, kind=payment.kind,
                       amount_minor=payment.amount_minor, currency=payment.currency,
                       credits=payment.credits, email=customer.email, product_name=name,
                       tags=tags, customer_id=customer.id, package_id=package_id,
                       stripe_customer=autotopup.stripe_customer_of(s, customer.id), **extra)


def _create_stripe_customer(intent: _Intent) -> str:
    """A Stripe Customer to own the card Checkout saves (keyed by our customer id, so
    concurrent first purchases make one)."""
    made = stp.create_customer(
        email=intent.email, name=intent.tags.get("external_id") or intent.email,
        metadata={"customer_id": intent.customer_id, "external_id": intent.tags.get("external_id")},
        idempotency_key=f"creditdesk-customer-{intent.customer_id}")
    return made["id"]


def _open_checkout(intent: _Intent, success_url: str | None,
                   cancel_url: str | None, stripe_customer: str | None = None) -> StripeCheckout:
    cfg = current_app.config
    base = (cfg.get("PUBLIC_BASE_URL") or "http://127.0.0.1:5000").rstrip("/")
    success_url = success_url or cfg.get("CHECKOUT_SUCCESS_URL") or \
        f"{base}/checkout/success?session_id={{CHECKOUT_SESSION_ID}}"
    cancel_url = cancel_url or cfg.get("CHECKOUT_CANCEL_URL") or f"{base}/checkout/cancelled"
    subscription = intent.kind == "subscription"
    session = stp.create_checkout_session(
        mode="subscription" if subscription else "payment", amount_minor=intent.amount_minor,
        currency=intent.currency, product_name=intent.product_name, credits=intent.credits,
        customer_ref=stripe_customer or intent.email, client_reference_id=str(intent.payment_id),
        metadata=intent.tags, success_url=success_url, cancel_url=cancel_url,
        idempotency_key=f"creditdesk-payment-{intent.payment_id}",
        price_id=intent.price_id if subscription else None,
        interval=intent.interval if subscription else "month",
        # Always, for packages: auto top-up can only be enabled once a card is saved.
        save_payment_method=not subscription and stripe_customer is not None)
    return StripeCheckout(payment_id=intent.payment_id, session_id=session["id"],
                          checkout_url=session["url"])


def _open_order(intent: _Intent) -> RazorpayOrder:
    key_id = rzp.key_id()
    order = rzp.create_order(amount_minor=intent.amount_minor, currency=intent.currency,
                             receipt=f"payment_{intent.payment_id}", notes=intent.tags)
    return RazorpayOrder(payment_id=intent.payment_id, order_id=order["id"], key_id=key_id,
                         amount=intent.amount_minor, currency=intent.currency,
                         credits=intent.credits)


def _mark_failed(payment_id: int, error: str) -> None:
    with atomic() as s:
        payment = s.get(Payment, payment_id)
        if payment.status == "created":
            payment.status = "failed"
        payment.meta = {**(payment.meta or {}), "error": error[:500]}
    log.warning("purchases.provider_failed", extra={"payment_id": payment_id, "error": error})


# --- finding and locking payments --------------------------------------------------------------

def find_payment(*, provider: str, order_id: str | None = None, payment_ref: str | None = None,
                 payment_id: int | str | None = None) -> Payment | None:
    """Our payment for a provider order/session id, provider payment id, or our own id (tags)."""
    s = db.session
    if order_id:
        found = s.scalar(select(Payment).where(Payment.provider == provider,
                                               Payment.provider_order_id == order_id))
        if found is not None:
            return found
    if payment_ref:
        found = s.scalar(select(Payment).where(Payment.provider == provider,
                                               Payment.provider_payment_id == payment_ref))
        if found is not None:
            return found
    if payment_id is not None and str(payment_id).isdigit():
        found = s.get(Payment, int(payment_id))
        if found is not None and found.provider == provider:
            return found
    return None


def grant_key(provider: str, provider_payment_id: str) -> str:
    return f"payment:{provider}:{provider_payment_id}"


# --- settlement --------------------------------------------------------------------------------

def settle(*, payment_id: int, provider_payment_id: str, amount_minor: int | None = None,
           currency: str | None = None, actor: Actor = SYSTEM,
           order_id: str | None = None) -> Settled:
    """Mark a package payment paid and grant its credits, once per provider payment."""
    with atomic() as s:
        payment = lock_payment(s, payment_id)
        key = grant_key(payment.provider, provider_payment_id)
        if done := ledger.find_by_key(s, key):
            return _settled(s, payment, done, replay=True)
        if payment.kind != "package":
            raise Conflict(f"Payment {payment.id} is a subscription; its credits come with invoices.")
        if order_id is not None and payment.provider_order_id not in (None, order_id):
            raise Conflict(f"Payment {payment.id} belongs to another order.")
        if payment.provider_payment_id not in (None, provider_payment_id):
            raise Conflict(f"Order of payment {payment.id} was already paid by "
                           f"{payment.provider_payment_id}; refund {provider_payment_id} at the provider.")
        if amount_minor is not None and (amount_minor != payment.amount_minor or
                                         (currency or "").upper() != payment.currency.upper()):
            raise Conflict(f"Payment {payment.id} expected {payment.amount_minor} {payment.currency}, "
                           f"the provider reports {amount_minor} {currency}.")
        now = utcnow()
        payment.provider_payment_id = provider_payment_id
        payment.provider_order_id = payment.provider_order_id or order_id
        if payment.status in ("created", "failed"):
            payment.status = "paid"
        payment.paid_at = payment.paid_at or now
        account = ledger.lock_account(s, customer_id=payment.customer_id)
        package = s.get(CreditPackage, payment.package_id) if payment.package_id else None
        expires_at = now + timedelta(days=package.expiry_days) \
            if package is not None and package.expiry_days else None
        entry = ledger.post_grant(
            s, account, credits=payment.credits, source="purchase", actor=actor, key=key,
            expires_at=expires_at, reason=f"{payment.provider} purchase",
            cost_minor=payment.amount_minor, currency=payment.currency, payment_id=payment.id,
            reference=f"payment:{payment.id}")
        outbox.emit("payment.succeeded", payment_event(payment, credits=entry.amount),
                    customer_id=payment.customer_id, session=s)
        # A refund the provider reported before the payment reached us is applied now.
        refunds.claw_back_refunded(s, payment, actor=actor)
        log.info("purchases.settled", extra={"payment_id": payment.id, "credits": payment.credits,
                                             "provider_payment_id": provider_payment_id})
        return _settled(s, payment, entry, replay=False)


def payment_event(payment: Payment, *, credits: int) -> dict:
    """The `data` of payment.succeeded (docs/webhooks.md); external_id is added by the outbox."""
    return {"payment_id": payment.id, "provider": payment.provider,
            "provider_payment_id": payment.provider_payment_id, "kind": payment.kind,
            "amount": payment.amount_minor, "currency": payment.currency, "credits": credits}


def _settled(s: Session, payment: Payment, entry: LedgerEntry, *, replay: bool) -> Settled:
    s.flush()
    balance = ledger.balance(payment.customer_id)
    return Settled(payment_id=payment.id, customer_id=payment.customer_id, entry_id=entry.id,
                   credits_added=entry.amount, credits_balance=balance, replay=replay)


def verify_razorpay(*, order_id: str, payment_id: str, signature: str,
                    actor: Actor = SYSTEM) -> Settled:
    """Checkout's signature over `order_id|payment_id`, then the package credits (once)."""
    rzp.verify_payment_signature(order_id=order_id, payment_id=payment_id, signature=signature)
    payment = find_payment(provider="razorpay", order_id=order_id)
    if payment is None:
        raise NotFound(f"No Razorpay order {order_id} was started here.")
    return settle(payment_id=payment.id, provider_payment_id=payment_id, order_id=order_id,
                  actor=actor)


__all__ = ["start", "settle", "verify_razorpay", "find_payment", "lock_payment", "grant_key",
           "StripeCheckout", "RazorpayOrder", "Settled"]
