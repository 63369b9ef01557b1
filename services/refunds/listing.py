"""Refunds as staff see them: by status with counts, keyset-paged, and one refund with its story."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import joinedload

from models import AuditLog, LedgerEntry, Payment, Refund, Staff, db
from models.payment import REFUND_STATUSES
from services.core.paging import ListFilters, keyset
from services.ledger import customers as customer_service
from services.refunds import eligibility
from services.refunds.requests import get

MAX_PAGE = 200
PROVIDERS = ("stripe", "razorpay")


@dataclass
class Filters(ListFilters):
    status: str = ""
    customer: str = ""
    provider: str = ""

    @classmethod
    def parse(cls, args) -> Filters:
        status = (args.get("status") or "").strip()
        provider = (args.get("provider") or "").strip()
        return cls(status=status if status in REFUND_STATUSES else "",
                   customer=(args.get("customer") or "").strip()[:320],
                   provider=provider if provider in PROVIDERS else "")


@dataclass
class Page:
    refunds: list[Refund]
    more: bool
    next_before: int | None
    counts: dict[str, int]
    filters: Filters
    staff: dict[int, str]
    unknown_customer: bool = False


def staff_emails(ids) -> dict[int, str]:
    ids = {i for i in ids if i}
    if not ids:
        return {}
    return dict(db.session.execute(select(Staff.id, Staff.email).where(Staff.id.in_(ids))).all())


def page(filters: Filters, *, before_id: int | None = None, limit: int = 50) -> Page:
    """Refunds newest first (keyset by id), with the count per status for the tabs."""
    limit = max(1, min(limit, MAX_PAGE))
    q = select(Refund).options(joinedload(Refund.customer), joinedload(Refund.payment))
    counts_q = select(Refund.status, func.count(Refund.id)).group_by(Refund.status)
    if filters.customer:
        c = customer_service.resolve(filters.customer)
        if c is None:
            return Page(refunds=[], more=False, next_before=None, counts={}, filters=filters,
                        staff={}, unknown_customer=True)
        q = q.where(Refund.customer_id == c.id)
        counts_q = counts_q.where(Refund.customer_id == c.id)
    if filters.provider:
        q = q.join(Payment, Payment.id == Refund.payment_id).where(Payment.provider == filters.provider)
        counts_q = counts_q.join(Payment, Payment.id == Refund.payment_id) \
            .where(Payment.provider == filters.provider)
    if filters.status:
        q = q.where(Refund.status == filters.status)
    rows, next_before = keyset(q, Refund.id, cursor=before_id, limit=limit)
    counts = dict.fromkeys(REFUND_STATUSES, 0)
    counts.update({st: int(n) for st, n in db.session.execute(counts_q)})
    return Page(refunds=rows, more=next_before is not None, next_before=next_before,
                counts=counts, filters=filters,
                staff=staff_emails(i for r in rows for i in (r.requested_by_id, r.approved_by_id)))


def row(refund_id: int) -> tuple[Refund, dict[int, str]]:
    """One refund for a table row (after an action), with its staff names."""
    r = get(refund_id)
    return r, staff_emails((r.requested_by_id, r.approved_by_id))


@dataclass
class Detail:
    refund: Refund
    payment: Payment
    timeline: list[AuditLog]
    clawbacks: list[LedgerEntry]
    staff: dict[int, str]
    eligibility: eligibility.Eligibility | None


def detail(refund_id: int) -> Detail:
    """A refund with its payment, every audited step, and the claw-back entries it made."""
    r = get(refund_id)
    timeline = list(db.session.scalars(
        select(AuditLog).where(AuditLog.target_type == "refund", AuditLog.target_id == str(r.id))
        .order_by(AuditLog.id).limit(200)))
    keys = [f"refund:{r.id}"]
    claws = list(db.session.scalars(select(LedgerEntry).where(
        LedgerEntry.payment_id == r.payment_id, LedgerEntry.type == "clawback",
        (LedgerEntry.idempotency_key.in_(keys)) | (LedgerEntry.idempotency_key.like(f"refund:{r.id}:%"))
        | (LedgerEntry.id == (r.clawback_entry_id or 0))).order_by(LedgerEntry.id)))
    staff = staff_emails((r.requested_by_id, r.approved_by_id, *(a.staff_id for a in timeline)))
    return Detail(refund=r, payment=r.payment, timeline=timeline, clawbacks=claws, staff=staff,
                  eligibility=eligibility.for_payment_id(r.payment_id))


def pending_count() -> int:
    return int(db.session.scalar(select(func.count(Refund.id))
                                 .where(Refund.status == "requested")) or 0)
