"""Customers: upsert from the product backend, lookup and search for staff."""
from __future__ import annotations

from sqlalchemy import func, or_, select

from models import Account, AuditLog, Customer, Payment, Plan, Refund, Task, db, utcnow
from services.core import audit, params
from services.core.db import atomic
from services.core.errors import CustomerNotFound, ValidationFailed


def get(customer_id: int) -> Customer:
    c = db.session.get(Customer, customer_id)
    if c is None or c.deleted_at is not None:
        raise CustomerNotFound(f"Customer {customer_id} not found.")
    return c


def get_by_external_id(external_id: str) -> Customer:
    c = db.session.scalar(select(Customer).where(Customer.external_id == external_id,
                                                 Customer.deleted_at.is_(None)))
    if c is None:
        raise CustomerNotFound(f"Customer {external_id} not found.")
    return c


_KEEP = object()


def upsert(*, external_id: str, email: str, name: str = "", plan_code: str | None = None,
           subscription_status: str | None = None,
           low_balance_threshold: int | None | object = _KEEP) -> tuple[Customer, bool]:
    """Create or update a customer (and its account); returns (customer, created).

    `low_balance_threshold`: left as it is unless given; None removes the override."""
    external_id = (external_id or "").strip()
    if not external_id:
        raise ValidationFailed("external_id is required", details={"external_id": "required"})
    with atomic() as s:
        plan = None
        if plan_code:
            plan = s.scalar(select(Plan).where(Plan.code == plan_code))
            if plan is None:
                raise ValidationFailed(f"Unknown plan {plan_code!r}.", details={"plan": "unknown"})
        c = s.scalar(select(Customer).where(Customer.external_id == external_id)
                     .with_for_update(of=Customer))
        created = c is None
        if created:
            c = Customer(external_id=external_id, email=email, name=name or "")
            s.add(c)
            s.flush()
            s.add(Account(customer_id=c.id, balance=0, version=0))
        else:
            c.email, c.name, c.deleted_at = email, name or c.name, None
            c.updated_at = utcnow()
        if plan is not None:
            c.plan_id = plan.id
        if subscription_status:
            c.subscription_status = subscription_status
        if low_balance_threshold is not _KEEP:
            c.low_balance_threshold = _threshold(low_balance_threshold)
        s.flush()
        return c, created


def _threshold(value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10**12:
        raise ValidationFailed("low_balance_threshold must be a whole number of credits >= 0",
                               details={"low_balance_threshold": "invalid"})
    return value


def set_low_balance_threshold(*, customer_id: int, value: int | None, staff=None,
                              ip: str | None = None) -> Customer:
    """A staff change of the customer's own low-balance threshold (None: the plan's or the
    setting's applies), audited."""
    value = _threshold(value)
    with atomic() as s:
        c = s.scalar(select(Customer).where(Customer.id == customer_id)
                     .with_for_update(of=Customer))
        if c is None or c.deleted_at is not None:
            raise CustomerNotFound(f"Customer {customer_id} not found.")
        before = c.low_balance_threshold
        if before != value:
            c.low_balance_threshold = value
            c.updated_at = utcnow()
            audit.record(action="customers.low_balance_threshold", staff=staff,
                         target_type="customer", target_id=c.id, ip=ip,
                         before={"low_balance_threshold": before},
                         after={"low_balance_threshold": value})
        return c


def soft_delete(*, external_id: str) -> Customer:
    """Mark a customer deleted; the ledger is kept."""
    with atomic() as s:
        c = s.scalar(select(Customer).where(Customer.external_id == external_id))
        if c is None:
            raise CustomerNotFound(f"Customer {external_id} not found.")
        c.deleted_at = c.deleted_at or utcnow()
        return c


def search(*, q: str = "", limit: int = 25, after_id: int | None = None) -> list[Customer]:
    """Customers matching email, name or external id (prefix / substring), keyset-paged by id."""
    stmt = select(Customer).where(Customer.deleted_at.is_(None))
    q = (q or "").strip()
    if q:
        # A % or _ typed by staff is a character to find, not a wildcard.
        like = "%" + q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        stmt = stmt.where(or_(func.lower(Customer.email).like(like, escape="\\"),
                              func.lower(Customer.name).like(like, escape="\\"),
                              Customer.external_id == q,
                              func.lower(Customer.external_id).like(like, escape="\\")))
    if after_id is not None:
        stmt = stmt.where(Customer.id > after_id)
    return list(db.session.scalars(stmt.order_by(Customer.id).limit(limit)))


def count() -> int:
    return db.session.scalar(select(func.count(Customer.id)).where(Customer.deleted_at.is_(None)))


def account_of(customer_id: int) -> Account:
    return db.session.scalar(select(Account).where(Account.customer_id == customer_id))


# --- the staff dashboard's customer page -------------------------------------------------------

def recent_tasks(customer_id: int, limit: int = 10) -> list[Task]:
    return list(db.session.scalars(select(Task).where(Task.customer_id == customer_id)
                                   .order_by(Task.created_at.desc(), Task.id.desc()).limit(limit)))


def recent_payments(customer_id: int, limit: int = 10) -> list[Payment]:
    return list(db.session.scalars(select(Payment).where(Payment.customer_id == customer_id)
                                   .order_by(Payment.created_at.desc(), Payment.id.desc())
                                   .limit(limit)))


def recent_refunds(customer_id: int, limit: int = 10) -> list[Refund]:
    return list(db.session.scalars(select(Refund).where(Refund.customer_id == customer_id)
                                   .order_by(Refund.created_at.desc(), Refund.id.desc())
                                   .limit(limit)))


def activity(customer_id: int, limit: int = 10) -> list[AuditLog]:
    """Staff actions on this customer (adjustments, requests, refunds), newest first."""
    return list(db.session.scalars(
        select(AuditLog).where(AuditLog.target_type == "customer",
                               AuditLog.target_id == str(customer_id))
        .order_by(AuditLog.id.desc()).limit(limit)))


def resolve(ref: str) -> Customer | None:
    """A customer by id (#12 or 12), exact external id or exact email; None when unknown."""
    ref = (ref or "").strip()
    if not ref:
        return None
    digits = ref.lstrip("#")
    if (n := params.to_int(digits)) is not None:
        c = db.session.get(Customer, n)
        if c is not None:
            return c
    return db.session.scalar(
        select(Customer).where(or_(Customer.external_id == ref, func.lower(Customer.email) == ref.lower()))
        .order_by(Customer.id).limit(1))
