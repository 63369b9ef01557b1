"""Balance notices and the auto top-up trigger: the one rule every balance-lowering path calls.

Under the account row lock, each movement that lowers a balance from `before` to `after` is
checked here (services.ledger.posting `_post`, the hot path, batch debits, bulk expiry):
- `credits.low_balance` when it crosses below the customer's threshold (before >= t > after);
- `credits.depleted` when it reaches 0 (before > 0 >= after);
- an AutoTopupAttempt('pending') when a *debit* crosses below the customer's enabled, unpaused
  auto top-up threshold, within its monthly limit, with no attempt open (docs/notices.md).

The rule is stateless: the row lock orders the movements of an account, so exactly one movement
sees each crossing, and a second one needs the balance back at or above the threshold first.
The threshold is the customer's override, else its plan's, else the `low_balance_threshold`
setting (cached per process); 0 turns the low-balance notice off.

What the rule needs of the customer (external id, threshold override, auto top-up threshold) is
read with the lock itself: `columns()` are added to the locking statement, so a movement that
crosses nothing costs no extra query.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, case, func, select
from sqlalchemy.orm import Session

from models import Account, AutoTopup, AutoTopupAttempt, Customer, Plan, utcnow
from services.core import settings as app_settings
from services.events import outbox

OPEN_ATTEMPTS = ("pending", "processing")
# Attempts that use up a month's allowance: charged or being charged (failed and requires_action
# ones moved no money). One definition for the trigger here and the charge's re-check.
ALLOWANCE_ATTEMPTS = ("pending", "processing", "succeeded")


@dataclass(frozen=True)
class Watch:
    """What the crossing rule needs to know of one customer, read under the account lock."""

    external_id: str
    threshold: int | None  # the customer's override, else its plan's; None = the setting
    topup_threshold: int | None  # an enabled, unpaused auto top-up's threshold


def crossed(before: int, after: int, threshold: int) -> bool:
    """The balance went from at/above `threshold` to below it."""
    return before >= threshold > after


def depleted(before: int, after: int) -> bool:
    return before > 0 >= after


def low_threshold(override: int | None) -> int:
    return int(app_settings.get("low_balance_threshold")) if override is None else int(override)


def effective_threshold(customer: Customer) -> int:
    """The customer's low-balance threshold: its own, else its plan's, else the setting."""
    if customer.low_balance_threshold is not None:
        return customer.low_balance_threshold
    plan = customer.plan
    return low_threshold(plan.low_balance_threshold if plan is not None else None)


# --- what the lock reads -------------------------------------------------------------------------

def columns(customer_id_col) -> list:
    """Scalar subqueries over the locked account's customer, for the locking statement."""
    acc = customer_id_col.table
    ext = (select(Customer.external_id).where(Customer.id == customer_id_col)
           .correlate(acc).scalar_subquery())
    override = (select(func.coalesce(Customer.low_balance_threshold, Plan.low_balance_threshold))
                .select_from(Customer).outerjoin(Plan, Plan.id == Customer.plan_id)
                .where(Customer.id == customer_id_col).correlate(acc).scalar_subquery())
    topup = (select(AutoTopup.threshold)
             .where(AutoTopup.customer_id == customer_id_col, AutoTopup.enabled.is_(True),
                    AutoTopup.paused_at.is_(None)).correlate(acc).scalar_subquery())
    return [ext.label("watch_external_id"), override.label("watch_threshold"),
            topup.label("watch_topup")]


# The same three, as SQL for the hot path's driver-level UPDATE ... RETURNING on PostgreSQL.
PG_COLUMNS = (
    "(SELECT c.external_id FROM customers c WHERE c.id = accounts.customer_id), "
    "(SELECT COALESCE(c.low_balance_threshold, p.low_balance_threshold) FROM customers c "
    "LEFT JOIN plans p ON p.id = c.plan_id WHERE c.id = accounts.customer_id), "
    "(SELECT t.threshold FROM auto_topups t WHERE t.customer_id = accounts.customer_id "
    "AND t.enabled AND t.paused_at IS NULL)")


def watch_of(external_id, threshold, topup) -> Watch:
    return Watch(external_id, None if threshold is None else int(threshold),
                 None if topup is None else int(topup))


def watch_for(s: Session, customer_id: int) -> Watch:
    """The Watch read on its own (a path whose lock did not read it)."""
    acc = Account.__table__
    row = s.execute(select(*columns(acc.c.customer_id)).where(acc.c.customer_id == customer_id)
                    ).one()
    return watch_of(*row)


def remember(account: Account, watch: Watch) -> None:
    """Keep the Watch read with an ORM account's lock, for the movements of this transaction."""
    account.__dict__["_crossing_watch"] = watch


def remembered(account: Account) -> Watch | None:
    return account.__dict__.get("_crossing_watch")


# --- the rule -------------------------------------------------------------------------------------

def check(s: Session, *, customer_id: int, watch: Watch | None, before: int, after: int,
          entry_type: str, entry_id: Callable[[], int], at: datetime | None = None) -> None:
    """Emit the notices and trigger the auto top-up a lowering movement crosses into.

    Call under the account lock, inside the movement's transaction. `entry_id()` gives the
    movement's entry id (called only when something crossed: the ORM path flushes for it).
    """
    if after >= before:
        return
    if watch is None:
        watch = watch_for(s, customer_id)
    events = notices(watch, before=before, after=after)
    topup = (entry_type == "debit" and watch.topup_threshold is not None
             and crossed(before, after, watch.topup_threshold))
    for type_, data in events:
        outbox.emit(type_, data, customer_id=customer_id, external_id=watch.external_id,
                    session=s, at=at)
    if topup:
        _trigger_topup(s, customer_id=customer_id, after=after, entry_id=entry_id(), at=at)


def notices(watch: Watch, *, before: int, after: int) -> list[tuple[str, dict]]:
    """The notices (event type, data) a movement from `before` to `after` crosses into, in the
    order they are emitted; the set-based writer (services.ledger.bulk) writes the same rows."""
    if after >= before:
        return []
    threshold = low_threshold(watch.threshold)
    data = {"balance": after, "threshold": threshold}
    out = []
    if threshold > 0 and crossed(before, after, threshold):
        out.append(("credits.low_balance", data))
    if depleted(before, after):
        out.append(("credits.depleted", data))
    return out


def month_start(at: datetime) -> datetime:
    return at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _trigger_topup(s: Session, *, customer_id: int, after: int, entry_id: int,
                   at: datetime | None) -> AutoTopupAttempt | None:
    """One pending attempt for this crossing, if the auto top-up allows one now."""
    at = at or utcnow()
    setting = s.scalar(select(AutoTopup).where(AutoTopup.customer_id == customer_id))
    if setting is None or not setting.enabled or setting.paused_at is not None:
        return None
    counted, open_ = s.execute(
        select(func.count(case((and_(AutoTopupAttempt.status.in_(ALLOWANCE_ATTEMPTS),
                                     AutoTopupAttempt.created_at >= month_start(at)), 1))),
               func.count(case((AutoTopupAttempt.status.in_(OPEN_ATTEMPTS), 1))))
        .where(AutoTopupAttempt.customer_id == customer_id)).one()
    if open_ or counted >= setting.monthly_limit:
        return None
    attempt = AutoTopupAttempt(customer_id=customer_id, package_id=setting.package_id,
                               key=f"autotopup:{customer_id}:{entry_id}", status="pending",
                               balance_at_trigger=after, created_at=at)
    s.add(attempt)
    return attempt


__all__ = ["ALLOWANCE_ATTEMPTS", "month_start", "Watch", "crossed", "depleted", "check", "columns",
           "PG_COLUMNS", "watch_of", "watch_for", "remember", "remembered", "effective_threshold",
           "low_threshold", "notices"]
