"""Headline figures for the overview page, straight from the ledger."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import case, func, select

from models import Account, Customer, LedgerEntry, Payment, db, utcnow


@dataclass
class Kpis:
    outstanding: int
    customers: int
    granted_30d: int
    spent_30d: int
    granted_today: int
    spent_today: int
    revenue_30d: list[tuple[str, int]] = field(default_factory=list)  # (currency, minor)
    spent_daily: list[int] = field(default_factory=list)
    granted_daily: list[int] = field(default_factory=list)


def kpis(days: int = 30) -> Kpis:
    """Credits outstanding, customers, granted/spent today and over `days`, revenue."""
    s = db.session
    now = utcnow()
    since = (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    outstanding = s.scalar(select(func.coalesce(func.sum(Account.balance), 0)))
    customers = s.scalar(select(func.count(Customer.id)).where(Customer.deleted_at.is_(None)))
    day = func.date(LedgerEntry.created_at)
    incoming = case((LedgerEntry.amount > 0, LedgerEntry.amount), else_=0)
    spent = case((LedgerEntry.type == "debit", -LedgerEntry.amount), else_=0)
    refunded = case((LedgerEntry.type == "refund", LedgerEntry.amount), else_=0)
    granted = case((LedgerEntry.type.in_(("grant", "adjustment")), incoming), else_=0)
    rows = s.execute(
        select(day, func.sum(granted), func.sum(spent) - func.sum(refunded))
        .where(LedgerEntry.created_at >= since).group_by(day)
    ).all()
    by_day = {str(d): (int(g or 0), int(sp or 0)) for d, g, sp in rows}
    keys = [str((since + timedelta(days=i)).date()) for i in range(days)]
    granted_daily = [by_day.get(k, (0, 0))[0] for k in keys]
    spent_daily = [by_day.get(k, (0, 0))[1] for k in keys]
    revenue = s.execute(
        select(Payment.currency, func.sum(Payment.amount_minor - Payment.refunded_minor))
        .where(Payment.paid_at >= since, Payment.paid_at.is_not(None))
        .group_by(Payment.currency).order_by(Payment.currency)
    ).all()
    today_key = str(today.date())
    return Kpis(
        outstanding=int(outstanding), customers=int(customers),
        granted_30d=sum(granted_daily), spent_30d=sum(spent_daily),
        granted_today=by_day.get(today_key, (0, 0))[0], spent_today=by_day.get(today_key, (0, 0))[1],
        revenue_30d=[(c, int(v or 0)) for c, v in revenue],
        spent_daily=spent_daily, granted_daily=granted_daily,
    )
