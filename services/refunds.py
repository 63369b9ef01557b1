"""Refunds of payments.

Provider-initiated refunds (a refund made at Stripe or Razorpay and reported by webhook:
`charge.refunded`, `refund.processed`) go through `apply_provider_refund`: the refund is recorded
once (by our refund key or the provider's refund id), the payment's refunded total follows the
provider's cumulative figure, and the unused credits of that payment are clawed back in
proportion to the money refunded, never more than what is left unused.

The claw-back aims at a target instead of adding per event: target = granted credits x refunded
money / paid money, minus what was clawed back already for this payment. Redeliveries,
out-of-order events and a staff refund whose own claw-back already ran therefore converge on one
state. Lock order: payment row, then account (as in services/purchases.py).
"""
from __future__ import annotations

import logging

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from models import CreditGrant, LedgerEntry, Payment, Refund, utcnow
from services import ledger
from services.db import atomic
from services.errors import NotFound
from services.ledger import SYSTEM, Actor

log = logging.getLogger("creditdesk.refunds")

# Refund rows that stand for money leaving (or about to leave) the provider.
COUNTED = ("processing", "processed")


def lock_payment(s: Session, payment_id: int) -> Payment:
    """The payment row, locked for this transaction (always taken before the account lock)."""
    payment = s.scalar(select(Payment).where(Payment.id == payment_id).with_for_update()
                       .execution_options(populate_existing=True))
    if payment is None:
        raise NotFound(f"No payment {payment_id}.")
    return payment


def _set_refund_status(payment: Payment) -> None:
    if payment.refunded_minor <= 0:
        return
    payment.status = "refunded" if payment.refunded_minor >= payment.amount_minor \
        else "partially_refunded"


def apply_provider_refund(*, payment_id: int, refund_key: str, amount_minor: int,
                          refunded_total_minor: int = 0, provider_refund_id: str | None = None,
                          reason: str = "refunded at the payment provider",
                          actor: Actor = SYSTEM) -> Refund | None:
    """Record a refund made at the provider and claw back that payment's unused credits.

    `amount_minor` is this refund's amount; `refunded_total_minor` the provider's cumulative
    refunded amount of the payment as reported with it (0 when unknown). Idempotent by
    `refund_key` and `provider_refund_id`. Returns the Refund row (None when nothing is new).
    """
    with atomic() as s:
        payment = lock_payment(s, payment_id)
        match = Refund.idempotency_key == refund_key[:64]
        if provider_refund_id:
            match = or_(match, Refund.provider_refund_id == provider_refund_id)
        refund = s.scalar(select(Refund).where(match))
        created = refund is None and amount_minor > 0
        if created:
            now = utcnow()
            refund = Refund(payment_id=payment.id, customer_id=payment.customer_id,
                            status="processed", credits=0, amount_minor=amount_minor,
                            currency=payment.currency, reason=reason, attempts=0,
                            idempotency_key=refund_key[:64], provider_refund_id=provider_refund_id,
                            created_at=now, updated_at=now, processed_at=now)
            s.add(refund)
            s.flush()
        recorded = s.scalar(select(func.coalesce(func.sum(Refund.amount_minor), 0)).where(
            Refund.payment_id == payment.id, Refund.status.in_(COUNTED)))
        total = max(payment.refunded_minor, refunded_total_minor, int(recorded))
        payment.refunded_minor = min(total, payment.amount_minor)
        _set_refund_status(payment)
        entries = claw_back_refunded(s, payment, actor=actor)
        if created and entries:
            refund.credits = -sum(e.amount for e in entries)
            refund.clawback_entry_id = entries[0].id
        log.info("refunds.provider_refund", extra={
            "payment_id": payment.id, "refund_key": refund_key, "new": created,
            "refunded_minor": payment.refunded_minor,
            "clawed": -sum(e.amount for e in entries)})
        return refund if created else None


def claw_back_refunded(s: Session, payment: Payment, *, actor: Actor = SYSTEM) -> list[LedgerEntry]:
    """Inside the caller's transaction (payment row locked): claw back up to the refunded share.

    Only credits still unused in the payment's own grants are taken; what was spent stays spent.
    """
    if payment.amount_minor <= 0 or payment.refunded_minor <= 0:
        return []
    grants = list(s.scalars(select(CreditGrant).where(
        CreditGrant.payment_id == payment.id, CreditGrant.source.in_(ledger.PAID_SOURCES))
        .order_by(CreditGrant.id)))
    if not grants:
        return []  # not paid out yet: settlement calls this again once it grants
    granted = sum(g.amount for g in grants)
    refunded = min(payment.refunded_minor, payment.amount_minor)
    target = granted * refunded // payment.amount_minor
    clawed = -int(s.scalar(select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
        LedgerEntry.payment_id == payment.id, LedgerEntry.type == "clawback")))
    want = target - clawed
    if want <= 0:
        return []
    ledger.lock_account(s, customer_id=payment.customer_id)
    entries = []
    for g in grants:
        s.refresh(g)
        take = min(want, g.remaining)
        if take <= 0:
            continue
        # One claw-back per (payment, refunded level, bucket): a replay finds its key.
        key = f"clawback:payment:{payment.id}:{refunded}:{g.id}"
        if ledger.find_by_key(s, key):
            continue
        entries.append(ledger.post_clawback(
            s, grant_id=g.id, credits=take, reason=f"{payment.provider} refund of payment {payment.id}",
            actor=actor, key=key, request_hash=ledger.fingerprint("clawback", grant=g.id, credits=take),
            payment_id=payment.id))
        want -= take
        if want == 0:
            break
    return entries


__all__ = ["apply_provider_refund", "claw_back_refunded", "lock_payment"]
