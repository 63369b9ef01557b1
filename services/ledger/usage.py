"""A customer's usage over a period (seed 002's `credits/me`): credits spent per feature and per
day, what was refunded of them, and the period's totals. Read-only, two grouped queries.

A debit counts on its UTC day; a refund of a debit counts against the debit's feature on the day
it was refunded (the entry carries the debit's feature).
"""
from __future__ import annotations

from datetime import date, datetime, time, timedelta

from sqlalchemy import case, func, select

from models import LedgerEntry as E
from models import db
from services.core.errors import ValidationFailed
from services.ledger.rollup import day_expr

MAX_DAYS = 366
DEFAULT_DAYS = 30


def period(date_from: date | None, date_to: date | None, *, today: date) -> tuple[date, date]:
    """The days asked for (both inclusive): the last 30 days by default, at most 366."""
    date_to = date_to or today
    date_from = date_from or date_to - timedelta(days=DEFAULT_DAYS - 1)
    if date_from > date_to:
        raise ValidationFailed("from must not be after to.", details={"from": "after to"})
    if (date_to - date_from).days + 1 > MAX_DAYS:
        raise ValidationFailed(f"The period is at most {MAX_DAYS} days.",
                               details={"from": f"more than {MAX_DAYS} days before to"})
    return date_from, date_to


def summary(*, customer_id: int, date_from: date, date_to: date) -> dict:
    """Spent, refunded and net credits per feature, per day and in total for [from, to]."""
    start = datetime.combine(date_from, time.min)
    end = datetime.combine(date_to + timedelta(days=1), time.min)
    spent = func.coalesce(func.sum(case((E.type == "debit", -E.amount), else_=0)), 0)
    refunded = func.coalesce(func.sum(case((E.type == "refund", E.amount), else_=0)), 0)
    debits = func.coalesce(func.sum(case((E.type == "debit", 1), else_=0)), 0)
    where = (E.customer_id == customer_id, E.created_at >= start, E.created_at < end,
             E.type.in_(("debit", "refund")))

    def row(r) -> dict:
        return {"spent": int(r.spent), "refunded": int(r.refunded),
                "net": int(r.spent) - int(r.refunded), "debits": int(r.debits)}

    features = db.session.execute(
        select(E.feature, spent.label("spent"), refunded.label("refunded"), debits.label("debits"))
        .where(*where).group_by(E.feature).order_by(spent.desc(), E.feature)).all()
    day = day_expr()
    days = db.session.execute(
        select(day.label("day"), spent.label("spent"), refunded.label("refunded"),
               debits.label("debits")).where(*where).group_by(day).order_by(day)).all()
    by_feature = [{"feature": r.feature, **row(r)} for r in features]
    totals = {k: sum(f[k] for f in by_feature) for k in ("spent", "refunded", "net", "debits")}
    return {"from": date_from.isoformat(), "to": date_to.isoformat(), "totals": totals,
            "by_feature": by_feature,
            "by_day": [{"day": str(r.day)[:10], **row(r)} for r in days]}


__all__ = ["summary", "period", "MAX_DAYS"]
