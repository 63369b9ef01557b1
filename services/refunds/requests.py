"""Refunds of payments: staff (or API) refund requests, and refunds made at the provider.

Staff refunds (maker-checker): `request` -> `approve` (someone other than the requester) ->
`process`, with the states requested, approved, processing, processed, failed, rejected.
Processing follows STYLE.md: (1) record the intent with our own id (`Refund.idempotency_key`,
`creditdesk-refund-<id>`) and commit; (2) call the provider with that id as its idempotency key,
holding no lock; (3) settle in a second transaction: claw back the refund's credits (ledger key
`refund:<refund id>`), mark it processed and add its money to the payment. A provider error marks
the refund `failed` with the error and leaves the ledger untouched; `process` again (retry)
sends the same key, so the provider refunds at most once.

Provider-initiated refunds (`charge.refunded`, `refund.processed`) go through
`apply_provider_refund`: recorded once (by our refund key, the provider's refund id, or as one
of our own refunds still in flight), the payment's refunded total follows the provider's
cumulative figure, and the unused credits of that payment are clawed back in proportion to the
money refunded, never more than what is left unused. When the webhook of one of our own refunds
arrives before our settlement, it settles that refund itself (our claw-back, our key); the
settlement that follows finds it processed and does nothing: one claw-back, whoever is first.

Lock order everywhere: payment row, then account (as in services/purchases.py).
"""
from __future__ import annotations

import hashlib
import logging
from datetime import timedelta
from uuid import uuid4

from sqlalchemy import func, or_, select, true, update
from sqlalchemy.orm import Session

from models import CreditGrant, LedgerEntry, Payment, Refund, db, utcnow
from services.core import audit
from services.core.db import atomic
from services.core.errors import (
    Conflict,
    Forbidden,
    IdempotencyConflict,
    NotFound,
    PaymentProviderError,
    RefundNotEligible,
    ValidationFailed,
)
from services.events import outbox
from services.ledger import posting as ledger
from services.ledger import rules
from services.ledger.rules import SYSTEM, Actor
from services.providers import razorpay as rzp
from services.providers import stripe as stp
from services.refunds import eligibility

log = logging.getLogger("creditdesk.refunds")

# Refund rows whose money has left the provider.
COUNTED = ("processed",)
OWN_PREFIX = "creditdesk-refund-"  # the idempotency key of refunds started here
APPROVERS = ("admin", "finance")  # roles holding refunds.approve (dashboard/auth.py)
OPEN = ("requested", "approved", "processing", "failed")
PROCESSABLE = ("approved", "failed")
# A refund left `processing` this long (the process died mid-call) may be retried: the same key
# makes the provider answer with the refund it already made, if it made one.
STALE_PROCESSING = timedelta(minutes=5)
MAX_REASON = 500
RAZORPAY_MIN_REFUND = 100  # minor units: Razorpay refuses smaller refunds


def _locked(s: Session, model, row_id: int, missing: str):
    """The row, locked for this transaction and re-read (not the identity map's stale copy)."""
    row = s.scalar(select(model).where(model.id == row_id).with_for_update()
                   .execution_options(populate_existing=True))
    if row is None:
        raise NotFound(missing)
    return row


def lock_payment(s: Session, payment_id: int) -> Payment:
    """The payment row, locked for this transaction (always taken before the account lock)."""
    return _locked(s, Payment, payment_id, f"No payment {payment_id}.")


def _lock_refund(s: Session, refund_id: int) -> Refund:
    return _locked(s, Refund, refund_id, f"Refund {refund_id} not found.")


def get(refund_id: int) -> Refund:
    refund = db.session.get(Refund, refund_id)
    if refund is None:
        raise NotFound(f"Refund {refund_id} not found.")
    return refund


def cost_basis_amount(payment: Payment, credits: int, granted: int) -> int:
    """Money for `credits` at the payment's cost basis: amount x credits / granted, rounded down."""
    base = granted or payment.credits
    return payment.amount_minor * credits // base if base > 0 else 0


def _paid_grants(s: Session, payment_id: int) -> list[CreditGrant]:
    return list(s.scalars(select(CreditGrant).where(
        CreditGrant.payment_id == payment_id, CreditGrant.source.in_(rules.PAID_SOURCES))
        .order_by(CreditGrant.id)))


def _set_refund_status(payment: Payment) -> None:
    if payment.refunded_minor <= 0:
        return
    payment.status = "refunded" if payment.refunded_minor >= payment.amount_minor \
        else "partially_refunded"


def _recorded(s: Session, payment_id: int) -> int:
    return int(s.scalar(select(func.coalesce(func.sum(Refund.amount_minor), 0)).where(
        Refund.payment_id == payment_id, Refund.status.in_(COUNTED))))


def _actor_label(actor: Actor) -> str:
    return f"{actor.type}:{actor.id}" if actor.id else actor.type


def _audit(action: str, refund: Refund, *, staff=None, actor: Actor | None = None,
           before: dict | None = None, after: dict | None = None, reason: str | None = None,
           ip: str | None = None) -> None:
    audit.record(action=action, staff=staff,
                 actor=None if staff is not None else _actor_label(actor or SYSTEM),
                 target_type="refund", target_id=refund.id, before=before,
                 after={"payment_id": refund.payment_id, "customer_id": refund.customer_id,
                        **(after or {})}, reason=reason, ip=ip)


# --- the request ------------------------------------------------------------------------------

def _own_key(key: str | None) -> str:
    """Our idempotency key: from the caller's form/request key (a double submit files once)."""
    if key:
        return OWN_PREFIX + hashlib.sha256(key.encode()).hexdigest()[:40]
    return OWN_PREFIX + uuid4().hex


def request(*, payment_id: int, reason: str, credits: int | None = None, staff=None,
            actor: Actor | None = None, key: str | None = None, ip: str | None = None,
            customer_id: int | None = None) -> Refund:
    """Ask for a refund of `credits` unused credits of one purchase (all refundable by default).

    The money is credits x cost basis, rounded down. Checked against the eligibility rules under
    the payment's lock, so two requests never promise the same credits. `customer_id`, when
    given, must own the payment (an API caller names the customer).
    """
    reason = (reason or "").strip()
    if len(reason) < 3:
        raise ValidationFailed("Say why the purchase is refunded (at least 3 characters).",
                               details={"reason": "required"})
    if credits is not None and (isinstance(credits, bool) or not isinstance(credits, int)
                                or credits <= 0):
        raise ValidationFailed("Credits must be a whole number above zero.",
                               details={"credits": "must be > 0"})
    own_key = _own_key(key)
    actor = Actor.of_staff(staff) if staff is not None else (actor or SYSTEM)
    with atomic() as s:
        payment = lock_payment(s, payment_id)
        if customer_id is not None and payment.customer_id != customer_id:
            raise NotFound(f"No payment {payment_id} of this customer.")
        if key and (done := s.scalar(select(Refund).where(Refund.idempotency_key == own_key))):
            if done.payment_id != payment.id or (credits is not None and done.credits != credits):
                raise IdempotencyConflict("This request key was already used for another refund.")
            return done
        ledger.lock_account(s, customer_id=payment.customer_id)  # 404 for a deleted customer
        e = eligibility.for_payment_id(payment.id)
        if not e.eligible:
            raise RefundNotEligible(f"Payment {payment.id} cannot be refunded: {e.reason}.",
                                    details={"payment_id": payment.id, "reason": e.reason})
        if not payment.provider_payment_id:
            raise RefundNotEligible(f"Payment {payment.id} has no provider payment to refund.")
        credits = e.refundable_credits if credits is None else credits
        if credits > e.refundable_credits:
            raise RefundNotEligible(
                f"Only {e.refundable_credits:,} credits of payment {payment.id} can be refunded.",
                details={"credits": f"at most {e.refundable_credits}"})
        granted = sum(g.amount for g in _paid_grants(s, payment.id))
        amount = min(cost_basis_amount(payment, credits, granted), e.refundable_amount)
        if amount <= 0:
            raise RefundNotEligible(f"{credits:,} credits are worth less than the smallest "
                                    f"unit of {payment.currency}.", details={"credits": "too few"})
        if payment.provider == "razorpay" and amount < RAZORPAY_MIN_REFUND:
            raise RefundNotEligible("Razorpay refunds start at 1.00 (100 minor units); ask for "
                                    "more credits.", details={"credits": "too few"})
        now = utcnow()
        refund = Refund(payment_id=payment.id, customer_id=payment.customer_id, status="requested",
                        credits=credits, amount_minor=amount, currency=payment.currency,
                        reason=reason[:MAX_REASON], idempotency_key=own_key, attempts=0,
                        requested_by_id=getattr(staff, "id", None), created_at=now, updated_at=now)
        s.add(refund)
        s.flush()
        _audit("refund.requested", refund, staff=staff, actor=actor, reason=reason, ip=ip,
               after={"status": "requested", "credits": credits, "amount_minor": amount,
                      "currency": payment.currency, "unused_credits": e.refundable_credits})
        log.info("refunds.requested", extra={"refund_id": refund.id, "payment_id": payment.id,
                                             "credits": credits, "amount_minor": amount})
        return refund


def _transition(s: Session, refund_id: int, frm: tuple[str, ...], to: str, *, also=None,
                **values) -> Refund:
    """Move a refund from one of `frm` to `to` with one conditional UPDATE (once, under races)."""
    refund = s.get(Refund, refund_id)
    if refund is None:
        raise NotFound(f"Refund {refund_id} not found.")
    allowed = Refund.status.in_(frm)
    if also is not None:
        allowed = or_(allowed, also)
    done = s.execute(update(Refund).where(Refund.id == refund_id, allowed)
                     .values(status=to, updated_at=utcnow(), **values)
                     .execution_options(synchronize_session=False)).rowcount
    s.refresh(refund)
    if done != 1:
        raise Conflict(f"Refund #{refund_id} is {refund.status}; it cannot become {to}.")
    return refund


def approve(*, refund_id: int, staff, ip: str | None = None) -> Refund:
    """Approve a requested refund (finance or admin, never the person who asked for it)."""
    with atomic() as s:
        refund = get(refund_id)
        if staff.role not in APPROVERS:
            raise Forbidden("Only finance or an admin can approve a refund.")
        if refund.requested_by_id == staff.id:
            raise Forbidden("A second person must approve: you requested this refund.")
        refund = _transition(s, refund_id, ("requested",), "approved", approved_by_id=staff.id)
        _audit("refund.approved", refund, staff=staff, ip=ip, before={"status": "requested"},
               after={"status": "approved", "credits": refund.credits,
                      "amount_minor": refund.amount_minor})
        return refund


def reject(*, refund_id: int, staff, note: str = "", ip: str | None = None) -> Refund:
    """Reject a refund that has not reached the provider (requested, approved, or failed)."""
    with atomic() as s:
        refund = get(refund_id)
        if staff.role not in APPROVERS:
            raise Forbidden("Only finance or an admin can reject a refund.")
        before = refund.status
        refund = _transition(s, refund_id, ("requested", "approved", "failed"), "rejected",
                             approved_by_id=refund.approved_by_id or staff.id)
        _audit("refund.rejected", refund, staff=staff, ip=ip, before={"status": before},
               after={"status": "rejected"}, reason=(note or "").strip()[:MAX_REASON] or None)
        return refund


# --- processing -------------------------------------------------------------------------------

def process(*, refund_id: int, staff=None, actor: Actor | None = None,
            ip: str | None = None) -> Refund:
    """Refund the money at the provider and claw back the credits (approved or failed refunds).

    Raises PaymentProviderError after recording the failure (status `failed`, ledger untouched).
    """
    actor = Actor.of_staff(staff) if staff is not None else (actor or SYSTEM)
    with atomic() as s:  # 1. the intent, committed before the provider hears of it
        refund = s.get(Refund, refund_id)
        if refund is None:
            raise NotFound(f"Refund {refund_id} not found.")
        if staff is not None and staff.role not in APPROVERS:
            raise Forbidden("Only finance or an admin can process a refund.")
        payment = lock_payment(s, refund.payment_id)
        _check_still_refundable(s, refund, payment)
        before = refund.status
        cutoff = utcnow() - STALE_PROCESSING
        if refund.status == "processing" and refund.updated_at >= cutoff:
            raise Conflict(f"Refund #{refund.id} is being processed right now. If it is still "
                           "processing in 5 minutes, retry it (same key: never refunded twice).")
        stale = (Refund.status == "processing") & (Refund.updated_at < cutoff)
        refund = _transition(s, refund_id, PROCESSABLE, "processing", also=stale,
                             attempts=Refund.attempts + 1, error=None)
        call = dict(provider=payment.provider, payment_ref=payment.provider_payment_id,
                    amount=refund.amount_minor, key=refund.idempotency_key, refund_id=refund.id,
                    payment_id=payment.id, customer_id=payment.customer_id)
        _audit("refund.processing", refund, staff=staff, actor=actor, ip=ip,
               before={"status": before},
               after={"status": "processing", "attempt": refund.attempts,
                      "idempotency_key": refund.idempotency_key})
    try:  # 2. no transaction and no lock held while the provider works
        answer = _refund_at_provider(**call)
    except PaymentProviderError as err:
        with atomic() as s:
            refund = s.get(Refund, refund_id)
            done = s.execute(update(Refund).where(Refund.id == refund_id,
                                                  Refund.status == "processing")
                             .values(status="failed", error=str(err)[:1000], updated_at=utcnow())
                             .execution_options(synchronize_session=False)).rowcount
            s.refresh(refund)
            if done:
                _audit("refund.failed", refund, staff=staff, actor=actor, ip=ip,
                       before={"status": "processing"},
                       after={"status": "failed", "attempt": refund.attempts}, reason=str(err))
        log.warning("refunds.provider_failed", extra={"refund_id": refund_id, "error": str(err)})
        raise
    return settle(refund_id=refund_id, provider_refund_id=answer.get("id"), actor=actor,
                  staff=staff, ip=ip)


def _check_still_refundable(s: Session, refund: Refund, payment: Payment) -> None:
    """Before the provider call: the credits are still unused and the money not refunded."""
    if refund.status not in (*PROCESSABLE, "processing"):
        return  # _transition explains
    ledger.lock_account(s, customer_id=payment.customer_id)
    now = utcnow()
    unused = sum(g.remaining for g in _paid_grants(s, payment.id)
                 if g.remaining > 0 and g.expired_at is None
                 and (g.expires_at is None or g.expires_at > now))
    others = s.execute(select(func.coalesce(func.sum(Refund.credits), 0),
                              func.coalesce(func.sum(Refund.amount_minor), 0)).where(
        Refund.payment_id == payment.id, Refund.id != refund.id,
        Refund.status.in_(("processing",)))).one()
    if refund.credits > unused - int(others[0]):
        raise RefundNotEligible(f"Only {max(unused - int(others[0]), 0):,} credits of payment "
                                f"{payment.id} are still unused; reject this request and ask "
                                "for a new one.")
    if refund.amount_minor > payment.amount_minor - payment.refunded_minor - int(others[1]):
        raise RefundNotEligible(f"Payment {payment.id} has been refunded meanwhile; reject this "
                                "request.")


def _refund_at_provider(*, provider: str, payment_ref: str | None, amount: int, key: str,
                        refund_id: int, payment_id: int, customer_id: int) -> dict:
    tags = {"creditdesk_refund_id": refund_id, "creditdesk_payment_id": payment_id,
            "customer_id": customer_id}
    if not payment_ref:
        raise PaymentProviderError(f"Payment {payment_id} has no provider payment id.")
    if provider == "stripe":
        answer = stp.create_refund(payment_intent=payment_ref, amount_minor=amount,
                                   idempotency_key=key, metadata=tags)
        bad = answer.get("status") in ("failed", "canceled")
    elif provider == "razorpay":
        answer = rzp.create_refund(payment_id=payment_ref, amount_minor=amount,
                                   idempotency_key=key, notes=tags)
        bad = answer.get("status") == "failed"
    else:
        raise PaymentProviderError(f"Unknown provider {provider!r}.")
    if bad:
        raise PaymentProviderError(f"{provider} refund {answer.get('id')} is "
                                   f"{answer.get('status')}; ask for a new refund.")
    return answer


def settle(*, refund_id: int, provider_refund_id: str | None, actor: Actor = SYSTEM, staff=None,
           ip: str | None = None) -> Refund:
    """The provider took the refund: claw back and mark it processed, once (webhook or us)."""
    with atomic() as s:
        refund = s.get(Refund, refund_id)
        if refund is None:
            raise NotFound(f"Refund {refund_id} not found.")
        payment = lock_payment(s, refund.payment_id)
        refund = _lock_refund(s, refund_id)
        if provider_refund_id and not refund.provider_refund_id:
            other = s.scalar(select(Refund.id).where(Refund.provider_refund_id == provider_refund_id))
            if other is not None:
                raise Conflict(f"Provider refund {provider_refund_id} is recorded as refund "
                               f"#{other}; check both in the dashboard.")
            refund.provider_refund_id = provider_refund_id
        if refund.status == "processed":
            log.info("refunds.settled_already", extra={"refund_id": refund.id})
            return refund  # the webhook was first
        if refund.status not in ("processing", "failed"):
            raise Conflict(f"Refund #{refund.id} is {refund.status}; it cannot be settled.")
        _complete(s, refund, payment, actor=actor, staff=staff, ip=ip, via="provider answer")
        return refund


def _complete(s: Session, refund: Refund, payment: Payment, *, actor: Actor, staff=None,
              ip: str | None = None, via: str) -> list[LedgerEntry]:
    """Inside the caller's transaction (payment locked): our claw-back, processed, money counted."""
    ledger.lock_account(s, customer_id=payment.customer_id)
    want, entries, clawed = refund.credits, [], 0
    for i, g in enumerate(_paid_grants(s, payment.id)):
        key = f"refund:{refund.id}" if i == 0 else f"refund:{refund.id}:{g.id}"
        if done := ledger.find_by_key(s, key):
            clawed -= done.amount
            continue
        s.refresh(g)
        take = min(want - clawed, g.remaining)
        if take <= 0 or g.expired_at is not None:
            continue
        entries.append(ledger.post_clawback(
            s, grant_id=g.id, credits=take, actor=actor, key=key,
            reason=f"refund #{refund.id} of {payment.provider} payment {payment.id}",
            request_hash=rules.fingerprint("clawback", grant=g.id, credits=take),
            payment_id=payment.id))
        clawed += take
        if clawed >= want:
            break
    short = refund.credits - clawed
    now = utcnow()
    refund.credits = clawed
    refund.clawback_entry_id = refund.clawback_entry_id or (entries[0].id if entries else None)
    refund.status, refund.processed_at, refund.updated_at, refund.error = "processed", now, now, None
    s.flush()
    payment.refunded_minor = min(max(payment.refunded_minor, _recorded(s, payment.id)),
                                 payment.amount_minor)
    _set_refund_status(payment)
    _audit("refund.processed", refund, staff=staff, actor=actor, ip=ip,
           after={"status": "processed", "via": via, "credits": clawed,
                  "amount_minor": refund.amount_minor,
                  "provider_refund_id": refund.provider_refund_id,
                  "clawback_entry_id": refund.clawback_entry_id,
                  **({"credits_spent_meanwhile": short} if short else {})})
    outbox.emit("refund.processed", refund_event(refund), customer_id=payment.customer_id,
                session=s)
    log.info("refunds.processed", extra={"refund_id": refund.id, "via": via, "credits": clawed})
    return entries


def refund_event(refund: Refund) -> dict:
    """The `data` of refund.processed (docs/webhooks.md); external_id is added by the outbox."""
    return {"refund_id": refund.id, "payment_id": refund.payment_id,
            "amount": refund.amount_minor, "currency": refund.currency,
            "credits": refund.credits, "provider_refund_id": refund.provider_refund_id,
            "reason": refund.reason}


# --- refunds made at the provider (webhooks) --------------------------------------------------

def _own_in_flight(s: Session, payment: Payment, amount_minor: int,
                   provider_refund_id: str | None, refunded_total_minor: int) -> Refund | None:
    """One of our own refunds that this provider event reports, if any.

    In flight (processing or failed after a lost answer, no provider id yet or the same one) with
    the same amount: the event is its confirmation. Already processed by us and the provider's
    cumulative total is covered by what we recorded: the event is its echo.
    """
    own = Refund.idempotency_key.startswith(OWN_PREFIX)
    ids = or_(Refund.provider_refund_id.is_(None), Refund.provider_refund_id == provider_refund_id) \
        if provider_refund_id else true()
    found = s.scalar(select(Refund).where(
        Refund.payment_id == payment.id, own, Refund.amount_minor == amount_minor,
        Refund.status.in_(("processing", "failed")), ids).order_by(Refund.id)
        .with_for_update().execution_options(populate_existing=True))
    if found is not None or provider_refund_id:
        return found
    if refunded_total_minor and _recorded(s, payment.id) >= refunded_total_minor:
        return s.scalar(select(Refund).where(
            Refund.payment_id == payment.id, own, Refund.amount_minor == amount_minor,
            Refund.status == "processed").order_by(Refund.id.desc()))
    return None


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
        if refund is None and amount_minor > 0:
            refund = _own_in_flight(s, payment, amount_minor, provider_refund_id,
                                    refunded_total_minor)
            if refund is not None:
                if provider_refund_id and not refund.provider_refund_id:
                    refund.provider_refund_id = provider_refund_id
                if refund.status != "processed":
                    _complete(s, refund, payment, actor=actor, via="provider webhook")
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
        total = max(payment.refunded_minor, refunded_total_minor, _recorded(s, payment.id))
        payment.refunded_minor = min(total, payment.amount_minor)
        _set_refund_status(payment)
        entries = claw_back_refunded(s, payment, actor=actor)
        if refund is not None and refund.status == "processed" and entries:
            refund.credits = refund.credits - sum(e.amount for e in entries)
            refund.clawback_entry_id = refund.clawback_entry_id or entries[0].id
        if created:  # made at the provider (our own refunds emit in _complete)
            outbox.emit("refund.processed", refund_event(refund),
                        customer_id=payment.customer_id, session=s)
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
    grants = _paid_grants(s, payment.id)
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
            actor=actor, key=key, request_hash=rules.fingerprint("clawback", grant=g.id, credits=take),
            payment_id=payment.id))
        want -= take
        if want == 0:
            break
    return entries


__all__ = ["apply_provider_refund", "approve", "claw_back_refunded", "cost_basis_amount", "get",
           "lock_payment", "process", "reject", "request", "settle"]
