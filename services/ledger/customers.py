"""Customers: upsert (one, or a batch of up to 1,000) from the product backend, lookup and search
for staff."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import String, bindparam, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from models import Account, AuditLog, Customer, Payment, Plan, Refund, Task, db, utcnow
from services.core import audit, params
from services.core.db import among, atomic
from services.core.errors import CustomerNotFound, ServiceError, ValidationFailed


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


MAX_BATCH = 1000
_KEEP = object()  # "leave the customer's low-balance threshold as it is"


@dataclass(frozen=True)
class Upsert:
    """One customer as the product backend sends it (PUT body plus its external id)."""

    external_id: str
    email: str
    name: str = ""
    plan_code: str | None = None
    low_balance_threshold: object = _KEEP  # an int, None (remove the override) or _KEEP


def _external_id(raw: str | None) -> str:
    external_id = (raw or "").strip()
    if not external_id:
        raise ValidationFailed("external_id is required", details={"external_id": "required"})
    return external_id


def _plans(s, codes: set[str]) -> dict[str, int]:
    """{plan code: plan id} of the codes that exist."""
    if not codes:
        return {}
    return dict(s.execute(select(Plan.code, Plan.id).where(Plan.code.in_(codes))).all())


def _unknown_plan(code: str) -> ValidationFailed:
    return ValidationFailed(f"Unknown plan {code!r}.", details={"plan": "unknown"})


def _new_row(item: Upsert, external_id: str, plan_id: int | None, now) -> dict:
    lbt = None if item.low_balance_threshold is _KEEP else item.low_balance_threshold
    return {"external_id": external_id, "email": item.email, "name": item.name or "",
            "plan_id": plan_id, "low_balance_threshold": lbt, "subscription_status": "none",
            "created_at": now, "updated_at": now}


def _changes(current, item: Upsert, plan_id: int | None) -> dict:
    """What an upsert changes on an existing customer (nothing: unchanged). An empty name or an
    absent plan keeps the current one; a soft-deleted customer comes back."""
    target = {"email": item.email, "name": item.name or current.name, "deleted_at": None}
    if plan_id is not None:
        target["plan_id"] = plan_id
    if item.low_balance_threshold is not _KEEP:
        target["low_balance_threshold"] = item.low_balance_threshold
    return {k: v for k, v in target.items() if getattr(current, k) != v}


def _insert_new(s, rows: list[dict]) -> dict[str, int]:
    """INSERT the customers (in external id order) and their accounts; {external_id: id} of
    those inserted. A row whose external id a concurrent call inserted first is skipped (ON
    CONFLICT DO NOTHING waits for that call's commit): the caller updates it instead. The same
    order in every call means two calls waiting on each other's new rows cannot deadlock."""
    if not rows:
        return {}
    t = Customer.__table__
    ins = pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
    rows = sorted(rows, key=lambda r: r["external_id"])
    got = {ext: cid for cid, ext in s.execute(
        ins(t).values(rows).on_conflict_do_nothing(index_elements=["external_id"])
        .returning(t.c.id, t.c.external_id)).all()}
    if got:
        now = rows[0]["created_at"]
        s.execute(insert(Account.__table__), [{"customer_id": cid, "balance": 0, "version": 0,
                                               "updated_at": now} for cid in got.values()])
    return got


def upsert(*, external_id: str, email: str, name: str = "", plan_code: str | None = None,
           subscription_status: str | None = None,
           low_balance_threshold: int | None | object = _KEEP) -> tuple[Customer, bool]:
    """Create or update a customer (and its account); returns (customer, created).

    `low_balance_threshold`: left as it is unless given; None removes the override."""
    if low_balance_threshold is not _KEEP:
        low_balance_threshold = _threshold(low_balance_threshold)
    item = Upsert(external_id=_external_id(external_id), email=email, name=name,
                  plan_code=plan_code, low_balance_threshold=low_balance_threshold)
    with atomic() as s:
        plan_id = None
        if plan_code:
            plan_id = _plans(s, {plan_code}).get(plan_code)
            if plan_id is None:
                raise _unknown_plan(plan_code)
        locked = (select(Customer).where(Customer.external_id == item.external_id)
                  .with_for_update(of=Customer).execution_options(populate_existing=True))
        c = s.scalar(locked)
        created = False
        if c is None:
            created = bool(_insert_new(s, [_new_row(item, item.external_id, plan_id, utcnow())]))
            c = s.scalar(locked)  # ours, or the one a concurrent call inserted first
        if not created:
            changes = _changes(c, item, plan_id)
            for k, v in changes.items():
                setattr(c, k, v)
            if changes:
                c.updated_at = utcnow()
        if subscription_status:
            c.subscription_status = subscription_status
        s.flush()
        return c, created


def upsert_many(items: list[Upsert | ServiceError]) -> list[str | ServiceError]:
    """Create or update up to MAX_BATCH customers in one transaction, by the rules of upsert():
    per item "created", "updated", "unchanged" or its error (an item given as an error keeps
    it). An external id sent more than once is refused for every item that carries it.

    Set-based: one SELECT of the plans, one of the customers already there, one INSERT of the
    new customers and one of their accounts, one SELECT ... FOR UPDATE (customer id order) of
    the others and one executemany UPDATE of those that change.
    """
    if len(items) > MAX_BATCH:
        raise ValidationFailed(f"At most {MAX_BATCH} customers per batch.",
                               details={"customers": "too many"})
    results: list[str | ServiceError | None] = [None] * len(items)
    where: dict[str, list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        if isinstance(item, ServiceError):
            results[i] = item
            continue
        try:
            where[_external_id(item.external_id)].append(i)
        except ServiceError as err:
            results[i] = err
    todo: dict[str, int] = {}
    for ext, indexes in where.items():
        if len(indexes) == 1:
            todo[ext] = indexes[0]
            continue
        err = ValidationFailed(
            f"external_id {ext!r} is sent more than once in this batch (items "
            f"{', '.join(map(str, indexes))}); send each customer once.",
            details={"external_id": "duplicate in this batch"})
        for i in indexes:
            results[i] = err
    if todo:
        with atomic() as s:
            _apply(s, items, todo, results)
    return results


def _apply(s, items: list[Upsert], todo: dict[str, int], results: list) -> None:
    plans = _plans(s, {items[i].plan_code for i in todo.values() if items[i].plan_code})
    for ext, i in list(todo.items()):
        code = items[i].plan_code
        if code and code not in plans:
            results[i] = _unknown_plan(code)
            del todo[ext]
    if not todo:
        return
    t, now = Customer.__table__, utcnow()
    there = set(s.scalars(select(t.c.external_id).where(among(s, t.c.external_id, todo, String))))
    inserted = _insert_new(s, [_new_row(items[i], ext, plans.get(items[i].plan_code), now)
                               for ext, i in todo.items() if ext not in there])
    for ext in inserted:
        results[todo[ext]] = "created"
    rest = [ext for ext in todo if ext not in inserted]
    if not rest:
        return
    rows = s.execute(select(t.c.id, t.c.external_id, t.c.email, t.c.name, t.c.plan_id,
                            t.c.low_balance_threshold, t.c.deleted_at)
                     .where(among(s, t.c.external_id, rest, String))
                     .order_by(t.c.id).with_for_update()).all()
    updates = []
    for row in rows:
        i = todo[row.external_id]
        item = items[i]
        changes = _changes(row, item, plans.get(item.plan_code))
        results[i] = "updated" if changes else "unchanged"
        if changes:
            target = {"email": row.email, "name": row.name, "plan_id": row.plan_id,
                      "low_balance_threshold": row.low_balance_threshold, **changes}
            updates.append({"p_id": row.id, **{f"p_{k}": v for k, v in target.items()
                                               if k != "deleted_at"}})
    if updates:
        s.execute(update(t).where(t.c.id == bindparam("p_id")).values(
            email=bindparam("p_email"), name=bindparam("p_name"), plan_id=bindparam("p_plan_id"),
            low_balance_threshold=bindparam("p_low_balance_threshold"), deleted_at=None,
            updated_at=now), updates)


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
