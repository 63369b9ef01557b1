"""Refund eligibility, a read model: which purchases of a customer could be refunded, and why not.

A purchase is refundable when it was paid within the `refund_window_days` setting, its payment is
not fully refunded, and credits of the grant it made are still unused (not spent, not expired).
The refundable amount is the unused share of what was paid, less refunds already made or open.
Nothing here writes; the refund itself is the refunds service's business.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select

from models import CreditGrant, Payment, Refund, db, utcnow
from services.core import settings as app_settings
from services.core.errors import NotFound

# A failed refund is retryable (same provider key), so its credits stay promised too.
OPEN_REFUNDS = ("requested", "approved", "processing", "failed")
LISTED = ("paid", "partially_refunded", "refunded")


@dataclass(frozen=True)
class Eligibility:
    payment_id: int
    provider: str
    kind: str
    paid_at: datetime | None
    credits: int
    amount_minor: int
    currency: str
    eligible: bool
    refundable_credits: int
    refundable_amount: int
    reason: str

    def as_dict(self) -> dict:
        return asdict(self)


def _unused(payment_ids: list[int], now: datetime) -> dict[int, int]:
    """Unused, unexpired credits of the grants each payment made."""
    if not payment_ids:
        return {}
    live = (CreditGrant.expires_at.is_(None)) | (CreditGrant.expires_at > now)
    rows = db.session.execute(
        select(CreditGrant.payment_id, func.coalesce(func.sum(CreditGrant.remaining), 0))
        .where(CreditGrant.payment_id.in_(payment_ids), CreditGrant.remaining > 0,
               CreditGrant.expired_at.is_(None), live)
        .group_by(CreditGrant.payment_id)).all()
    return {pid: int(total) for pid, total in rows}


def _held(payment_ids: list[int]) -> dict[int, tuple[int, int]]:
    """(credits, amount) of refunds requested but not processed yet, per payment."""
    if not payment_ids:
        return {}
    rows = db.session.execute(
        select(Refund.payment_id, func.sum(Refund.credits), func.sum(Refund.amount_minor))
        .where(Refund.payment_id.in_(payment_ids), Refund.status.in_(OPEN_REFUNDS))
        .group_by(Refund.payment_id)).all()
    return {pid: (int(c or 0), int(a or 0)) for pid, c, a in rows}


def for_payment(p: Payment, *, unused: int, held: tuple[int, int], now: datetime,
                window: timedelta) -> Eligibility:
    """One purchase's answer (pure: everything it needs is passed in)."""
    held_credits, held_amount = held
    credits = max(unused - held_credits, 0)
    left_to_refund = max(p.amount_minor - p.refunded_minor - held_amount, 0)
    value = p.amount_minor * credits // p.credits if p.credits > 0 else 0
    amount = min(value, left_to_refund)
    if p.status == "refunded" or p.refunded_minor >= p.amount_minor:
        reason = "already refunded in full"
    elif p.paid_at is None or p.status not in ("paid", "partially_refunded"):
        reason = "the payment is not completed"
    elif now - p.paid_at > window:
        reason = f"outside the {window.days}-day refund window"
    elif unused == 0:
        reason = "all credits of this purchase are used or expired"
    elif credits == 0 or left_to_refund == 0:
        reason = "a refund of this purchase is already in progress"
    elif amount == 0:
        reason = "the unused credits are worth less than the smallest currency unit"
    else:
        reason = "eligible"
    eligible = reason == "eligible"
    return Eligibility(payment_id=p.id, provider=p.provider, kind=p.kind, paid_at=p.paid_at,
                       credits=p.credits, amount_minor=p.amount_minor, currency=p.currency,
                       eligible=eligible, refundable_credits=credits if eligible else 0,
                       refundable_amount=amount if eligible else 0, reason=reason)


def for_customer(*, customer_id: int, limit: int = 100, now: datetime | None = None) -> list[Eligibility]:
    """Each purchase of the customer (newest first, at most `limit`) with its refund eligibility."""
    now = now or utcnow()
    window = timedelta(days=int(app_settings.get("refund_window_days")))
    payments = list(db.session.scalars(
        select(Payment).where(Payment.customer_id == customer_id, Payment.status.in_(LISTED))
        .order_by(Payment.paid_at.desc(), Payment.id.desc()).limit(limit)))
    ids = [p.id for p in payments]
    unused, held = _unused(ids, now), _held(ids)
    return [for_payment(p, unused=unused.get(p.id, 0), held=held.get(p.id, (0, 0)), now=now,
                        window=window) for p in payments]


def for_payment_id(payment_id: int, *, now: datetime | None = None) -> Eligibility:
    """One purchase's answer (call it with the payment row locked to act on it)."""
    now = now or utcnow()
    p = db.session.get(Payment, payment_id)
    if p is None:
        raise NotFound(f"No payment {payment_id}.")
    window = timedelta(days=int(app_settings.get("refund_window_days")))
    return for_payment(p, unused=_unused([p.id], now).get(p.id, 0),
                       held=_held([p.id]).get(p.id, (0, 0)), now=now, window=window)


def window_days() -> int:
    return int(app_settings.get("refund_window_days"))


__all__ = ["Eligibility", "for_customer", "for_payment", "for_payment_id", "window_days"]
