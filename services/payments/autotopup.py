"""Auto top-up settings (docs/auto_topup.md): per customer, set through the API and by admins.

A customer's `AutoTopup` row holds the setting and the Stripe payment method saved at an
earlier Checkout (`setup_future_usage=off_session`). A Stripe package Checkout creates the row
(disabled, threshold 0, the package bought) when it first gives the customer a Stripe Customer,
so the method has a home before anyone enables auto top-up. Enabling needs that saved method:
Razorpay customers are refused (`AUTO_TOPUP_STRIPE_ONLY`), others without one get
`AUTO_TOPUP_NO_PAYMENT_METHOD`. Enabling also resumes a paused auto top-up (failures to 0).

The charges themselves are services/payments/autotopup_charge.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models import AutoTopup, AutoTopupAttempt, CreditPackage, Payment, utcnow
from services.core import audit
from services.core.db import atomic
from services.core.errors import NotFound, ServiceError, ValidationFailed
from services.ledger import crossings

MAX_MONTHLY_LIMIT = 100
PAUSE_AFTER_FAILURES = 3


class StripeOnly(ServiceError, status=422, code="AUTO_TOPUP_STRIPE_ONLY"):
    """auto top-up is supported with Stripe only"""


class NoPaymentMethod(ServiceError, status=409, code="AUTO_TOPUP_NO_PAYMENT_METHOD"):
    """No saved Stripe payment method: the customer must buy once through Stripe Checkout."""


@dataclass(frozen=True)
class Summary:
    """What the API and the customer page show."""

    row: AutoTopup | None
    package: CreditPackage | None
    this_month: int
    attempts: list[AutoTopupAttempt]

    def as_dict(self, external_id: str) -> dict:
        r = self.row
        return {
            "external_id": external_id,
            "enabled": bool(r and r.enabled),
            "threshold": r.threshold if r else None,
            "package_id": r.package_id if r else None,
            "monthly_limit": r.monthly_limit if r else None,
            "this_month": self.this_month,
            "failures": r.failures if r else 0,
            "paused": bool(r and r.paused_at),
            "paused_at": _iso(r.paused_at) if r else None,
            "payment_method": ({"brand": r.card_brand, "last4": r.card_last4}
                               if r and r.payment_method_id else None),
        }


def _iso(at: datetime | None) -> str | None:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ") if at else None


def used_this_month(s: Session, customer_id: int, *, now: datetime | None = None,
                    before_id: int | None = None) -> int:
    """Top-ups of this calendar month (UTC) that use its allowance (crossings.ALLOWANCE_ATTEMPTS);
    with `before_id`, only those created before that attempt: the allowance goes in creation
    order, the same rule the trigger applies when it creates one."""
    q = select(func.count()).select_from(AutoTopupAttempt).where(
        AutoTopupAttempt.customer_id == customer_id,
        AutoTopupAttempt.status.in_(crossings.ALLOWANCE_ATTEMPTS),
        AutoTopupAttempt.created_at >= crossings.month_start(now or utcnow()))
    if before_id is not None:
        q = q.where(AutoTopupAttempt.id < before_id)
    return s.scalar(q) or 0


def summary(*, customer_id: int, recent: int = 10) -> Summary:
    """The setting, this month's count and the latest attempts."""
    from models import db
    s = db.session
    row = s.scalar(select(AutoTopup).where(AutoTopup.customer_id == customer_id))
    attempts = list(s.scalars(select(AutoTopupAttempt)
                              .where(AutoTopupAttempt.customer_id == customer_id)
                              .order_by(AutoTopupAttempt.id.desc()).limit(recent)))
    package = s.get(CreditPackage, row.package_id) if row else None
    return Summary(row, package, used_this_month(s, customer_id), attempts)


def packages() -> list[CreditPackage]:
    """What auto top-up can buy: active packages with a price."""
    from models import db
    return list(db.session.scalars(select(CreditPackage).where(
        CreditPackage.archived_at.is_(None), CreditPackage.price_minor > 0)
        .order_by(CreditPackage.sort_order, CreditPackage.id)))


def _lock(s: Session, customer_id: int) -> AutoTopup | None:
    return s.scalar(select(AutoTopup).where(AutoTopup.customer_id == customer_id)
                    .with_for_update().execution_options(populate_existing=True))


def _check_package(s: Session, package_id: int) -> CreditPackage:
    package = s.get(CreditPackage, package_id)
    if package is None or not package.active:
        raise ValidationFailed(f"No active credit package {package_id}.",
                               details={"package_id": "no such active package"})
    if package.price_minor <= 0:
        raise ValidationFailed(f"Package {package_id} has no price to charge.",
                               details={"package_id": "not a paid package"})
    return package


def _refuse_without_method(s: Session, customer_id: int) -> None:
    paid = dict(s.execute(select(Payment.provider, func.count()).where(
        Payment.customer_id == customer_id, Payment.paid_at.is_not(None)).group_by(Payment.provider)).all())
    if paid.get("razorpay") and not paid.get("stripe"):
        raise StripeOnly("auto top-up is supported with Stripe only; this customer pays "
                         "with Razorpay.", details={"enabled": "Stripe only"})
    raise NoPaymentMethod("No saved Stripe payment method: the customer must buy a package "
                          "through Stripe Checkout once before auto top-up can be enabled.",
                          details={"enabled": "no saved payment method"})


def configure(*, customer_id: int, enabled: bool, threshold: int, package_id: int,
              monthly_limit: int, staff=None, actor: str | None = None,
              ip: str | None = None) -> AutoTopup:
    """Set a customer's auto top-up; enabling resumes a paused one. Audited."""
    if threshold < 0:
        raise ValidationFailed("threshold must be 0 or more.", details={"threshold": ">= 0"})
    if not 1 <= monthly_limit <= MAX_MONTHLY_LIMIT:
        raise ValidationFailed(f"monthly_limit must be 1 to {MAX_MONTHLY_LIMIT}.",
                               details={"monthly_limit": f"1..{MAX_MONTHLY_LIMIT}"})
    with atomic() as s:
        _check_package(s, package_id)
        row = _lock(s, customer_id)
        if enabled and (row is None or not row.payment_method_id):
            _refuse_without_method(s, customer_id)
        before = _state(row)
        if row is None:
            row = AutoTopup(customer_id=customer_id, failures=0)
            s.add(row)
        row.enabled, row.threshold = enabled, threshold
        row.package_id, row.monthly_limit = package_id, monthly_limit
        if enabled:
            row.paused_at, row.failures = None, 0
        s.flush()
        audit.record(action="auto_topup.update", staff=staff, actor=actor,
                     target_type="customer", target_id=customer_id, before=before,
                     after=_state(row), ip=ip)
        return row


def resume(*, customer_id: int, staff=None, ip: str | None = None) -> AutoTopup:
    """Clear the pause and the failures in a row (the next crossing charges again)."""
    with atomic() as s:
        row = _lock(s, customer_id)
        if row is None:
            raise NotFound("This customer has no auto top-up.")
        before = _state(row)
        row.paused_at, row.failures = None, 0
        audit.record(action="auto_topup.resume", staff=staff, target_type="customer",
                     target_id=customer_id, before=before, after=_state(row), ip=ip)
        return row


def _state(row: AutoTopup | None) -> dict | None:
    if row is None:
        return None
    return {"enabled": row.enabled, "threshold": row.threshold, "package_id": row.package_id,
            "monthly_limit": row.monthly_limit, "failures": row.failures,
            "paused": row.paused_at is not None}


# --- the saved payment method (Stripe Checkout) -----------------------------------------------

def stripe_customer_of(s: Session, customer_id: int) -> str | None:
    return s.scalar(select(AutoTopup.stripe_customer_id).where(
        AutoTopup.customer_id == customer_id))


def remember_stripe_customer(*, customer_id: int, stripe_customer_id: str,
                             package_id: int) -> None:
    """Keep the Stripe Customer made for a Checkout; a first one makes a disabled row."""
    try:
        with atomic() as s:
            row = _lock(s, customer_id)
            if row is None:
                s.add(AutoTopup(customer_id=customer_id, enabled=False, threshold=0,
                                package_id=package_id, monthly_limit=1, failures=0,
                                stripe_customer_id=stripe_customer_id))
            elif not row.stripe_customer_id:
                row.stripe_customer_id = stripe_customer_id
    except IntegrityError:
        pass  # a concurrent Checkout of the same customer stored it first


def save_method(s: Session, *, customer_id: int, stripe_customer_id: str,
                payment_method_id: str, brand: str | None, last4: str | None,
                package_id: int | None) -> None:
    """Inside the checkout webhook's transaction: the card Checkout saved for off-session use."""
    row = _lock(s, customer_id)
    if row is None:
        if package_id is None:
            return
        row = AutoTopup(customer_id=customer_id, enabled=False, threshold=0,
                        package_id=package_id, monthly_limit=1, failures=0)
        s.add(row)
    row.stripe_customer_id = stripe_customer_id
    row.payment_method_id = payment_method_id
    row.card_brand, row.card_last4 = (brand or None), (last4 or None)
    s.flush()


__all__ = ["packages", "configure", "resume", "summary", "Summary", "save_method",
           "remember_stripe_customer", "stripe_customer_of", "used_this_month", "StripeOnly",
           "NoPaymentMethod", "MAX_MONTHLY_LIMIT", "PAUSE_AFTER_FAILURES"]
