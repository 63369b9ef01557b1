"""Auto top-up charges: claim a pending attempt, charge the saved card off-session, settle once.

An attempt (one per threshold crossing, UNIQUE key, inserted under the account lock by the
debit that crossed) goes pending -> processing -> succeeded | failed | requires_action:

1. claim (one short transaction): a conditional UPDATE pending -> processing (the candidate
   read with FOR UPDATE SKIP LOCKED on PostgreSQL), the setting re-checked under its row lock
   (enabled, not paused, this month's allowance), our Payment row recorded with our own id;
2. the PaymentIntent (confirm + off_session) with the attempt's key as Stripe idempotency key,
   no lock held;
3. settle: the attempt row locked, the package credits granted through purchases.settle (ledger
   key `payment:stripe:<PaymentIntent id>`), auto_topup.succeeded emitted. The
   `payment_intent.succeeded` webhook calls the same function: whichever lands second finds the
   attempt succeeded and does nothing, so the credits arrive once either way.

A crash (or a network failure) after Stripe charged but before step 3 leaves the attempt
`processing`; after STALE_AFTER the job calls Stripe again with the same key and Stripe answers
the same PaymentIntent, so nothing is charged twice. Stripe keeps keys 24 h: an attempt still
unsettled after GIVE_UP_AFTER is failed for a human to look at instead of retried.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from models import AutoTopup, AutoTopupAttempt, CreditPackage, Customer, Payment, utcnow
from services.core.db import atomic
from services.core.errors import PaymentProviderError
from services.events import outbox
from services.ledger.rules import Actor
from services.payments import purchases
from services.payments.autotopup import PAUSE_AFTER_FAILURES, used_this_month
from services.providers import stripe as stp

log = logging.getLogger("creditdesk.autotopup")

STALE_AFTER = timedelta(minutes=5)
GIVE_UP_AFTER = timedelta(hours=23)
JOB_ACTOR = Actor("job", "process_auto_topups")


@dataclass(frozen=True)
class _Charge:
    attempt_id: int
    key: str
    payment_id: int
    amount_minor: int
    currency: str
    stripe_customer: str
    payment_method: str
    metadata: dict


@dataclass
class Result:
    """What one pass did."""

    claimed: int = 0
    succeeded: int = 0
    failed: int = 0
    requires_action: int = 0
    waiting: int = 0  # charged but not settled yet, or Stripe unreachable: retried later
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"claimed": self.claimed, "succeeded": self.succeeded, "failed": self.failed,
                "requires_action": self.requires_action, "waiting": self.waiting}


def has_work() -> bool:
    """Whether an attempt is due (a scheduled tick with none records no job run)."""
    from models import db
    return db.session.scalar(select(AutoTopupAttempt.id).where(_due(utcnow())).limit(1)) \
        is not None


def process_due(*, limit: int = 50, actor: Actor = JOB_ACTOR) -> Result:
    """Claim and charge due attempts one at a time (pending, or processing and stale)."""
    result = Result()
    for _ in range(limit):
        charge = _claim_next(result)
        if charge is False:
            break
        if charge is None:  # claimed and refused by the re-check
            continue
        _charge(charge, result, actor)
    return result


def _due(now):
    return or_(AutoTopupAttempt.status == "pending",
               (AutoTopupAttempt.status == "processing")
               & (AutoTopupAttempt.updated_at < now - STALE_AFTER))


def _claim_next(result: Result) -> _Charge | None | bool:
    """Claim one due attempt; answers the charge to make, None (refused) or False (none due)."""
    now = utcnow()
    with atomic() as s:
        attempt = s.scalar(select(AutoTopupAttempt).where(_due(now))
                           .order_by(AutoTopupAttempt.id).limit(1)
                           .with_for_update(skip_locked=True)
                           .execution_options(populate_existing=True))
        if attempt is None:
            return False
        retry = attempt.status == "processing"
        claimed = s.execute(update(AutoTopupAttempt).where(AutoTopupAttempt.id == attempt.id, _due(now))
            .values(status="processing", updated_at=now)
            .execution_options(synchronize_session=False)).rowcount
        if claimed != 1:
            return None  # another runner took it between the read and the update
        s.refresh(attempt)
        result.claimed += 1
        customer = s.get(Customer, attempt.customer_id)
        topup = s.scalar(select(AutoTopup).where(AutoTopup.customer_id == attempt.customer_id)
                         .with_for_update().execution_options(populate_existing=True))
        if retry:
            if now - attempt.created_at > GIVE_UP_AFTER:
                _fail(s, attempt, topup, customer, reason="provider_unreachable",
                      message="Stripe did not answer for 23 h; check the PaymentIntent with "
                              f"metadata creditdesk_auto_topup_attempt_id={attempt.id}.",
                      count=False)
                result.failed += 1
                return None
        else:
            refusal = _refusal(s, attempt, topup, now)
            if refusal is not None:
                reason, message, emit = refusal
                _fail(s, attempt, topup, customer, reason=reason, message=message, count=False,
                      emit=emit)
                result.failed += 1
                return None
        package = s.get(CreditPackage, attempt.package_id)
        if attempt.payment_id is None:
            payment = Payment(customer_id=attempt.customer_id, provider="stripe", kind="package",
                              package_id=package.id, amount_minor=package.price_minor,
                              currency=package.currency.upper(), credits=package.credits,
                              status="created",
                              meta={"started_by": "auto_topup", "auto_topup_attempt_id": attempt.id})
            s.add(payment)
            s.flush()
            attempt.payment_id = payment.id
        payment = s.get(Payment, attempt.payment_id)
        return _Charge(
            attempt_id=attempt.id, key=attempt.key, payment_id=payment.id,
            amount_minor=payment.amount_minor, currency=payment.currency,
            stripe_customer=topup.stripe_customer_id, payment_method=topup.payment_method_id,
            metadata={"creditdesk_payment_id": payment.id,
                      "creditdesk_auto_topup_attempt_id": attempt.id,
                      "customer_id": attempt.customer_id, "external_id": customer.external_id,
                      "package_id": attempt.package_id})


def _refusal(s: Session, attempt: AutoTopupAttempt, topup: AutoTopup | None,
             now) -> tuple[str, str, bool] | None:
    """Why this attempt must not charge now: (reason, message, emit an event?) or None."""
    if topup is None or not topup.enabled:
        return "disabled", "auto top-up is disabled", False
    if topup.paused_at is not None:
        return "paused", "auto top-up is paused after failures in a row", False
    if not (topup.stripe_customer_id and topup.payment_method_id):
        return "no_payment_method", "no saved Stripe payment method", True
    package = s.get(CreditPackage, attempt.package_id)
    if package is None or not package.active or package.price_minor <= 0:
        return "package_unavailable", f"package {attempt.package_id} is not for sale", True
    if used_this_month(s, attempt.customer_id, now=now, before_id=attempt.id) \
            >= topup.monthly_limit:
        return "monthly_limit", f"the monthly limit of {topup.monthly_limit} is reached", True
    return None


def _charge(charge: _Charge, result: Result, actor: Actor) -> None:
    try:
        answer = stp.charge_off_session(
            amount_minor=charge.amount_minor, currency=charge.currency,
            customer=charge.stripe_customer, payment_method=charge.payment_method,
            idempotency_key=charge.key, metadata=charge.metadata)
    except PaymentProviderError as err:
        status = (err.details or {}).get("http_status") if isinstance(err.details, dict) else None
        if status in (400, 404):  # Stripe refused the request itself: a retry cannot help
            decline(attempt_id=charge.attempt_id, reason="provider_rejected", message=str(err))
            result.failed += 1
        else:  # unreachable or 5xx: the same key again after STALE_AFTER
            _note(charge.attempt_id, str(err))
            result.waiting += 1
            result.errors.append(f"attempt {charge.attempt_id}: {err}")
        return
    outcome = answer["outcome"]
    if outcome == "succeeded":
        settle(attempt_id=charge.attempt_id, payment_intent=answer["payment_intent"],
               amount_minor=answer.get("amount"), currency=answer.get("currency"), actor=actor)
        result.succeeded += 1
    elif outcome == "processing":
        _note(charge.attempt_id, None, provider_ref=answer["payment_intent"])
        result.waiting += 1
    else:
        decline(attempt_id=charge.attempt_id, reason=answer.get("reason") or outcome,
                message=answer.get("message"), provider_ref=answer.get("payment_intent"),
                requires_action=outcome == "requires_action")
        if outcome == "requires_action":
            result.requires_action += 1
        else:
            result.failed += 1


def _lock_attempt(s: Session, attempt_id: int) -> AutoTopupAttempt | None:
    return s.scalar(select(AutoTopupAttempt).where(AutoTopupAttempt.id == attempt_id)
                    .with_for_update().execution_options(populate_existing=True))


def _lock_topup(s: Session, customer_id: int) -> AutoTopup | None:
    return s.scalar(select(AutoTopup).where(AutoTopup.customer_id == customer_id)
                    .with_for_update().execution_options(populate_existing=True))


def settle(*, attempt_id: int, payment_intent: str, amount_minor: int | None = None,
           currency: str | None = None, actor: Actor = JOB_ACTOR) -> bool:
    """The PaymentIntent succeeded: grant the package once. False when already settled."""
    with atomic() as s:
        attempt = _lock_attempt(s, attempt_id)
        if attempt is None or attempt.status == "succeeded" or attempt.payment_id is None:
            return False
        settled = purchases.settle(payment_id=attempt.payment_id, provider_payment_id=payment_intent,
                                   amount_minor=amount_minor, currency=currency, actor=actor)
        attempt.status, attempt.provider_ref, attempt.error = "succeeded", payment_intent, None
        attempt.updated_at = utcnow()
        topup = _lock_topup(s, attempt.customer_id)
        if topup is not None:
            topup.failures = 0
        if settled.replay:  # granted before (the attempt row was reset by hand): no new event
            return False
        customer = s.get(Customer, attempt.customer_id)
        payment = s.get(Payment, attempt.payment_id)
        outbox.emit("auto_topup.succeeded", {
            "attempt_id": attempt.id, "payment_id": payment.id, "payment_intent": payment_intent,
            "package_id": attempt.package_id, "credits": settled.credits_added,
            "amount_minor": payment.amount_minor, "currency": payment.currency,
            "balance": settled.credits_balance}, customer_id=customer.id,
            external_id=customer.external_id)
        log.info("autotopup.succeeded", extra={"attempt_id": attempt.id,
                                               "payment_intent": payment_intent})
        return True


def decline(*, attempt_id: int, reason: str, message: str | None = None,
            provider_ref: str | None = None, requires_action: bool = False) -> None:
    """The charge did not go through: failed (or requires_action), failures + 1, event."""
    with atomic() as s:
        attempt = _lock_attempt(s, attempt_id)
        if attempt is None or attempt.status != "processing":
            return
        topup = _lock_topup(s, attempt.customer_id)
        customer = s.get(Customer, attempt.customer_id)
        attempt.provider_ref = provider_ref or attempt.provider_ref
        _fail(s, attempt, topup, customer, reason="requires_action" if requires_action else reason,
              message=message or reason, count=True,
              status="requires_action" if requires_action else "failed")
        if attempt.payment_id is not None:
            payment = s.get(Payment, attempt.payment_id)
            if payment.status == "created":
                payment.status = "failed"
                payment.meta = {**(payment.meta or {}), "error": (message or reason)[:500]}


def _fail(s: Session, attempt: AutoTopupAttempt, topup: AutoTopup | None, customer: Customer, *,
          reason: str, message: str, count: bool, status: str = "failed",
          emit: bool = True) -> None:
    now = utcnow()
    attempt.status, attempt.error, attempt.updated_at = status, f"{reason}: {message}"[:2000], now
    failures = topup.failures if topup is not None else 0
    if count and topup is not None:
        topup.failures = failures = topup.failures + 1
        if failures >= PAUSE_AFTER_FAILURES and topup.paused_at is None:
            topup.paused_at = now
            log.warning("autotopup.paused", extra={"customer_id": customer.id})
    if emit:
        outbox.emit("auto_topup.failed", {
            "attempt_id": attempt.id, "reason": reason, "message": message,
            "failures": failures, "paused": bool(topup is not None and topup.paused_at),
            "package_id": attempt.package_id}, customer_id=customer.id,
            external_id=customer.external_id)
    log.info("autotopup.failed", extra={"attempt_id": attempt.id, "reason": reason,
                                        "status": status})


def _note(attempt_id: int, error: str | None, provider_ref: str | None = None) -> None:
    with atomic() as s:
        attempt = _lock_attempt(s, attempt_id)
        if attempt is not None and attempt.status == "processing":
            attempt.error = error[:2000] if error else None
            attempt.provider_ref = provider_ref or attempt.provider_ref


__all__ = ["process_due", "settle", "decline", "has_work", "Result", "STALE_AFTER",
           "GIVE_UP_AFTER"]
