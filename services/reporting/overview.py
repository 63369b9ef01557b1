"""The overview: headline figures from the ledger, job runs, ledger health, pending approvals."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import joinedload

from models import (
    Account,
    AdjustmentRequest,
    Customer,
    JobRun,
    Payment,
    Refund,
    Task,
    db,
    utcnow,
)
from services.events import endpoints as webhook_endpoints
from services.ledger import rollup as ledger_rollup

FAILED = ("failed", "timed_out")


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
    revenue_daily: list[int] = field(default_factory=list)  # the main currency's, minor units
    failed_tasks_30d: int = 0
    failed_tasks_today: int = 0
    failed_daily: list[int] = field(default_factory=list)
    pending_refunds: int = 0
    pending_adjustments: int = 0
    days: int = 30


@dataclass
class Health:
    """The last reconcile_ledger run, as the nightly job recorded it."""

    run: JobRun | None
    ok: bool | None
    accounts: int | None = None
    entries: int | None = None
    failing: list[dict] = field(default_factory=list)  # [{name, violations}]
    stale: bool = False  # older than two days: the nightly job may not be running


@dataclass
class Approvals:
    adjustments: list[AdjustmentRequest]
    refunds: list[Refund]
    adjustments_total: int
    refunds_total: int


def _day_keys(since: datetime, days: int) -> list[str]:
    return [str((since + timedelta(days=i)).date()) for i in range(days)]


def _daily(rows, keys: list[str]) -> list[int]:
    by_day = {str(d): int(v or 0) for d, v in rows}
    return [by_day.get(k, 0) for k in keys]


def kpis(days: int = 30) -> Kpis:
    """Credits outstanding, granted/spent today and over `days`, revenue, failed tasks, queues."""
    s = db.session
    now = utcnow()
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    since = today - timedelta(days=days - 1)
    keys = _day_keys(since, days)
    outstanding = s.scalar(select(func.coalesce(func.sum(Account.balance), 0)))
    customers = s.scalar(select(func.count(Customer.id)).where(Customer.deleted_at.is_(None)))

    # Complete days from the ledger_daily rollup (the hourly rollup_ledger job), the rest live:
    # on a million entries, aggregating 30 days of entries on every view cost most of the page.
    # Same classification as analytics: granted = purchased + granted buckets (grants and
    # positive adjustments); spent = debits less the credits returned to them.
    moves, _ = ledger_rollup.read(since.date(), today.date())
    granted_by: dict[str, int] = {}
    spent_by: dict[str, int] = {}
    for m in moves:
        d = str(m.day)
        if m.kind in ("purchased", "granted"):
            granted_by[d] = granted_by.get(d, 0) + m.credits
        elif m.kind in ("spent", "returned"):
            spent_by[d] = spent_by.get(d, 0) - m.credits
    granted_daily = _daily(granted_by.items(), keys)
    spent_daily = _daily(spent_by.items(), keys)

    pay_day = func.date(Payment.paid_at)
    revenue_rows = s.execute(
        select(Payment.currency, pay_day, func.sum(Payment.amount_minor - Payment.refunded_minor))
        .where(Payment.paid_at >= since, Payment.paid_at.is_not(None))
        .group_by(Payment.currency, pay_day)
    ).all()
    revenue: dict[str, int] = {}
    days_with_sales: dict[str, int] = {}
    for cur, _d, v in revenue_rows:
        revenue[cur] = revenue.get(cur, 0) + int(v or 0)
        days_with_sales[cur] = days_with_sales.get(cur, 0) + 1
    # Minor units of different currencies do not compare: the main currency is the one that
    # sold on the most days (USD first on a tie).
    ordered = sorted(revenue.items(), key=lambda kv: (-days_with_sales[kv[0]], kv[0] != "USD", kv[0]))
    main = ordered[0][0] if ordered else None
    revenue_daily = _daily([(d, v) for c, d, v in revenue_rows if c == main], keys)

    task_day = func.date(Task.finished_at)
    failed_daily = _daily(s.execute(
        select(task_day, func.count(Task.id))
        .where(Task.status.in_(FAILED), Task.finished_at >= since).group_by(task_day)
    ).all(), keys)

    pending_refunds = s.scalar(select(func.count(Refund.id)).where(Refund.status == "requested"))
    pending_adjustments = s.scalar(select(func.count(AdjustmentRequest.id))
                                   .where(AdjustmentRequest.status == "pending"))
    return Kpis(
        outstanding=int(outstanding), customers=int(customers),
        granted_30d=sum(granted_daily), spent_30d=sum(spent_daily),
        granted_today=granted_daily[-1], spent_today=spent_daily[-1],
        revenue_30d=ordered, revenue_daily=revenue_daily,
        spent_daily=spent_daily, granted_daily=granted_daily,
        failed_tasks_30d=sum(failed_daily), failed_tasks_today=failed_daily[-1],
        failed_daily=failed_daily, pending_refunds=int(pending_refunds or 0),
        pending_adjustments=int(pending_adjustments or 0), days=days,
    )


def last_job_runs(limit: int = 8) -> list[JobRun]:
    """The most recent job runs of every job, newest first."""
    return list(db.session.scalars(
        select(JobRun).order_by(JobRun.started_at.desc(), JobRun.id.desc()).limit(limit)))


def ledger_health() -> Health:
    """What the last reconcile_ledger run found (details are the reconcile report's as_dict())."""
    run = db.session.scalar(select(JobRun).where(JobRun.job == "reconcile_ledger")
                            .order_by(JobRun.started_at.desc(), JobRun.id.desc()).limit(1))
    if run is None:
        return Health(run=None, ok=None)
    details = run.details if isinstance(run.details, dict) else {}
    checks = details.get("checks") if isinstance(details.get("checks"), list) else []
    failing = [{"name": str(c.get("name", "?")), "violations": int(c.get("violations") or 0)}
               for c in checks if isinstance(c, dict) and not c.get("ok", True)]
    if "ok" in details:
        ok = bool(details["ok"]) and run.status == "succeeded"
    else:
        ok = run.status == "succeeded" and not failing and not run.error_count
    if run.status == "running":
        ok = None
    finished = run.finished_at or run.started_at
    return Health(run=run, ok=ok, accounts=_int(details.get("accounts")),
                  entries=_int(details.get("entries")), failing=failing,
                  stale=finished < utcnow() - timedelta(days=2))


def _int(v) -> int | None:
    try:
        return None if v is None else int(v)
    except (TypeError, ValueError):
        return None


def pending_approvals(limit: int = 8) -> Approvals:
    """Adjustments waiting for a second person and refund requests waiting for approval."""
    s = db.session
    adjustments = list(s.scalars(
        select(AdjustmentRequest).where(AdjustmentRequest.status == "pending")
        .options(joinedload(AdjustmentRequest.customer), joinedload(AdjustmentRequest.requested_by))
        .order_by(AdjustmentRequest.created_at, AdjustmentRequest.id).limit(limit)))
    refunds = list(s.scalars(
        select(Refund).where(Refund.status == "requested")
        .options(joinedload(Refund.customer))
        .order_by(Refund.created_at, Refund.id).limit(limit)))
    adj_total = s.scalar(select(func.count(AdjustmentRequest.id))
                         .where(AdjustmentRequest.status == "pending"))
    ref_total = s.scalar(select(func.count(Refund.id)).where(Refund.status == "requested"))
    return Approvals(adjustments=adjustments, refunds=refunds,
                     adjustments_total=int(adj_total or 0), refunds_total=int(ref_total or 0))


@dataclass
class Overview:
    k: Kpis
    runs: list[JobRun]
    health: Health
    approvals: Approvals
    disabled_endpoints: list = field(default_factory=list)  # webhook endpoints (admins)


def page(*, webhooks: bool = False) -> Overview:
    """Everything the overview page shows (a fixed number of queries, whatever the data size);
    with `webhooks`, the product's webhook endpoints disabled after failing."""
    return Overview(k=kpis(), runs=last_job_runs(), health=ledger_health(),
                    approvals=pending_approvals(),
                    disabled_endpoints=webhook_endpoints.disabled() if webhooks else [])
