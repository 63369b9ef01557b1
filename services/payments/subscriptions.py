"""Stripe subscriptions: plan status on the customer and the monthly credits of paid invoices.

- `start_from_checkout`: a subscription Checkout completed -> the customer is on the plan.
- `apply_invoice`: `invoice.paid` -> the period's monthly credits, keyed by invoice id
  (`invoice:stripe:<invoice id>`), expiring after the plan's `credit_expiry_days`. A yearly
  plan's later months come from the distribution job; its month of payment is granted here under
  the job's key `distribution:<YYYY-MM>:<customer id>`, so that month is credited once.
- `apply_status`: `customer.subscription.updated/deleted` -> active / past_due / cancelled.

Webhooks arrive in any order. Each state change carries the provider's event time; the customer
keeps the time of the last one applied (`subscription_event_at`) and older events change nothing.
A cancelled subscription never comes back (Stripe cannot reactivate one), and an event about a
subscription that is no longer the customer's current one is ignored.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import Customer, LedgerEntry, Payment, Plan, utcnow
from services.core.db import atomic
from services.core.errors import Conflict
from services.events import outbox
from services.ledger import posting as ledger
from services.ledger.rules import SYSTEM, Actor
from services.payments import purchases
from services.refunds import requests as refunds

log = logging.getLogger("creditdesk.subscriptions")

STRIPE_STATUS = {"active": "active", "trialing": "active", "past_due": "past_due",
                 "unpaid": "past_due", "incomplete": "past_due", "paused": "past_due",
                 "canceled": "cancelled", "incomplete_expired": "cancelled"}


@dataclass(frozen=True)
class InvoiceResult:
    payment_id: int
    entry_id: int | None
    credits: int
    replay: bool


def from_unix(ts: int | float | None) -> datetime | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(int(ts), UTC).replace(tzinfo=None)


def _lock_customer(s: Session, customer_id: int) -> Customer | None:
    return s.scalar(select(Customer).where(Customer.id == customer_id).with_for_update(of=Customer)
                    .execution_options(populate_existing=True))


def _apply_state(c: Customer, *, subscription_id: str, status: str, at: datetime,
                 plan_id: int | None = None, period_end: datetime | None = None) -> bool:
    """Move the customer's subscription state, unless the event is stale; True when applied."""
    if c.subscription_event_at is not None and at < c.subscription_event_at:
        return False  # older than the state already applied
    current = c.subscription_id
    if current and current != subscription_id and c.subscription_status in ("active", "past_due"):
        return False  # about another subscription; the customer has moved on
    if current == subscription_id and c.subscription_status == "cancelled" and status != "cancelled":
        return False  # cancelled is final for a subscription
    c.subscription_id, c.subscription_provider = subscription_id, "stripe"
    c.subscription_status, c.subscription_event_at = status, at
    if plan_id is not None:
        c.plan_id = plan_id
    if period_end is not None:
        c.current_period_end = period_end
    c.updated_at = utcnow()
    return True


def start_from_checkout(*, payment_id: int, subscription_id: str, at: datetime,
                        actor: Actor = SYSTEM) -> bool:
    """A subscription Checkout completed: put its customer on the plan (credits come with invoices)."""
    with atomic() as s:
        payment = refunds.lock_payment(s, payment_id)
        if payment.kind != "subscription":
            raise Conflict(f"Payment {payment.id} is not a subscription checkout.")
        payment.meta = {**(payment.meta or {}), "subscription_id": subscription_id}
        c = _lock_customer(s, payment.customer_id)
        applied = _apply_state(c, subscription_id=subscription_id, status="active", at=at,
                               plan_id=payment.plan_id)
        log.info("subscriptions.started", extra={"customer_id": c.id, "payment_id": payment.id,
                                                 "subscription_id": subscription_id,
                                                 "applied": applied})
        return applied


def find_customer(s: Session, *, subscription_id: str | None, metadata: dict) -> Customer | None:
    """The customer of a Stripe subscription: by its id, else by our tags on it."""
    if subscription_id:
        c = s.scalar(select(Customer).where(Customer.subscription_id == subscription_id))
        if c is not None:
            return c
    cid = str(metadata.get("customer_id") or "")
    if cid.isdigit():
        return s.get(Customer, int(cid))
    pid = str(metadata.get("creditdesk_payment_id") or "")
    if pid.isdigit() and (p := s.get(Payment, int(pid))) is not None:
        return s.get(Customer, p.customer_id)
    return None


def find_plan(s: Session, *, metadata: dict, price_id: str | None) -> Plan | None:
    pid = str(metadata.get("plan_id") or "")
    if pid.isdigit() and (plan := s.get(Plan, int(pid))) is not None:
        return plan
    if price_id:
        return s.scalar(select(Plan).where(Plan.stripe_price_id == price_id))
    return None


def apply_invoice(*, invoice_id: str, subscription_id: str | None, metadata: dict,
                  billing_reason: str | None, amount_paid: int, currency: str,
                  price_id: str | None, period_start: datetime | None,
                  period_end: datetime | None, provider_payment_id: str | None,
                  at: datetime, actor: Actor = SYSTEM) -> InvoiceResult | None:
    """A paid subscription invoice: its payment row, the period's credits (once), plan active."""
    key = f"invoice:stripe:{invoice_id}"
    with atomic() as s:
        c = find_customer(s, subscription_id=subscription_id, metadata=metadata)
        if c is None:
            return None  # not a subscription sold here
        plan = find_plan(s, metadata=metadata, price_id=price_id)
        if plan is None:
            raise Conflict(f"Invoice {invoice_id}: no plan matches price {price_id}.")
        payment = _invoice_payment(s, invoice_id=invoice_id, customer=c, plan=plan,
                                   metadata=metadata, billing_reason=billing_reason,
                                   amount_paid=amount_paid, currency=currency)
        payment = refunds.lock_payment(s, payment.id)
        c = _lock_customer(s, c.id)  # lock order: payment, customer, account
        done = s.scalar(select(LedgerEntry).where(LedgerEntry.payment_id == payment.id,
                                                  LedgerEntry.type == "grant"))
        now = utcnow()
        if provider_payment_id and payment.provider_payment_id is None:
            payment.provider_payment_id = provider_payment_id
        payment.meta = {**(payment.meta or {}), "invoice_id": invoice_id,
                        "subscription_id": subscription_id}
        first_payment = payment.paid_at is None and done is None
        if payment.status in ("created", "failed"):
            payment.status = "paid"
        payment.paid_at = payment.paid_at or now
        entry = done
        if done is None and plan.monthly_credits > 0:
            account = ledger.lock_account(s, customer_id=c.id)
            expires_at = now + timedelta(days=plan.credit_expiry_days) \
                if plan.credit_expiry_days else None
            period = now.strftime("%Y-%m")
            if plan.interval == "year":
                # Yearly plans get their monthly credits from the distribution job; the month of
                # payment is granted here under the job's own key, so that month is paid once.
                month_key = f"distribution:{period}:{c.id}"
                if ledger.find_by_key(s, month_key) is None:
                    key = month_key
            entry = ledger.post_grant(
                s, account, credits=plan.monthly_credits, source="subscription", actor=actor,
                key=key, expires_at=expires_at, reason=f"{plan.name} subscription credits",
                cost_minor=amount_paid, currency=currency.upper(), payment_id=payment.id,
                plan_id=plan.id, period=period,
                reference=f"invoice:{invoice_id}")
            refunds.claw_back_refunded(s, payment, actor=actor)
        if first_payment:
            outbox.emit("payment.succeeded",
                        purchases.payment_event(payment, credits=entry.amount if entry else 0),
                        customer_id=c.id, session=s)
        if subscription_id:
            _apply_state(c, subscription_id=subscription_id, status="active", at=at,
                         plan_id=plan.id, period_end=period_end)
        log.info("subscriptions.invoice_paid", extra={
            "invoice_id": invoice_id, "customer_id": c.id, "payment_id": payment.id,
            "replay": done is not None})
        return InvoiceResult(payment_id=payment.id, entry_id=entry.id if entry else None,
                             credits=entry.amount if entry else 0, replay=done is not None)


def _invoice_payment(s: Session, *, invoice_id: str, customer: Customer, plan: Plan,
                     metadata: dict, billing_reason: str | None, amount_paid: int,
                     currency: str) -> Payment:
    """The payment row of an invoice: the Checkout's own for the first one, a new one for renewals."""
    found = s.scalar(select(Payment).where(Payment.provider == "stripe",
                                           Payment.provider_order_id == invoice_id))
    if found is not None:
        return found
    pid = str(metadata.get("creditdesk_payment_id") or "")
    first = s.get(Payment, int(pid)) if pid.isdigit() else None
    if first is not None and first.provider == "stripe" and first.kind == "subscription":
        paid_invoice = (first.meta or {}).get("invoice_id")
        if paid_invoice == invoice_id or (paid_invoice is None and
                                          billing_reason == "subscription_create"):
            return first
    payment = Payment(customer_id=customer.id, provider="stripe", kind="subscription",
                      provider_order_id=invoice_id, plan_id=plan.id, amount_minor=amount_paid,
                      currency=currency.upper(), credits=plan.monthly_credits, status="created",
                      meta={"invoice_id": invoice_id})
    s.add(payment)
    s.flush()
    return payment


def apply_status(*, subscription_id: str, stripe_status: str, metadata: dict,
                 price_id: str | None, period_end: datetime | None, at: datetime,
                 deleted: bool = False) -> bool | None:
    """`customer.subscription.updated/deleted`: the customer's plan status; None if not ours."""
    status = "cancelled" if deleted else STRIPE_STATUS.get(stripe_status, "past_due")
    with atomic() as s:
        c = find_customer(s, subscription_id=subscription_id, metadata=metadata)
        if c is None:
            return None
        c = _lock_customer(s, c.id)
        plan = find_plan(s, metadata=metadata, price_id=price_id)
        applied = _apply_state(c, subscription_id=subscription_id, status=status, at=at,
                               plan_id=plan.id if plan else None, period_end=period_end)
        log.info("subscriptions.status", extra={"customer_id": c.id, "status": status,
                                                "subscription_id": subscription_id,
                                                "applied": applied})
        return applied


__all__ = ["start_from_checkout", "apply_invoice", "apply_status", "find_customer", "from_unix",
           "STRIPE_STATUS"]
