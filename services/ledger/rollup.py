"""Movements of credits by kind, day and bucket, and the ledger_daily rollup that caches them.

A movement is one allocation: credits of one entry through one grant (bucket). Its kind comes
from the entry (and, for a return, from the entry it returns); its source, currency and cost
basis from the bucket. The same classification drives the analytics page and the roll-forward
report, so both tell the same story.

The rollup is never updated by debits (a hot row per day would serialise every debit): a job
(`rollup_ledger`, hourly) recomputes whole UTC days from allocations, and readers take days up
to `rolled_through` from ledger_daily and later days live from the ledger. A day is rolled up
once it ended more than SETTLE ago; the last RECHECK_DAYS rolled days are recomputed on every
run (transactions that commit late), and so is every day that received an entry with an id
above the last run's maximum (bulk or back-dated inserts). Correctness never depends on the job
having run; only speed does.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from sqlalchemy import Date, and_, case, cast, delete, func, insert, literal, select, text, type_coerce
from sqlalchemy.orm import aliased

from models import (
    Allocation,
    CreditGrant,
    LedgerDaily,
    LedgerEntry,
    LedgerRollupState,
    db,
    utcnow,
)
from services.core import money
from services.core.db import atomic
from services.ledger.rules import PAID_SOURCES

KINDS = ("purchased", "granted", "spent", "returned", "adjusted", "expired", "refunded", "other")
SETTLE = timedelta(minutes=10)
RECHECK_DAYS = 2

E, A, G = LedgerEntry, Allocation, CreditGrant
R = aliased(LedgerEntry, name="returned_of")


def kind_expr():
    """The movement kind of an allocation row (entries joined with their related entry R)."""
    is_return = and_(E.type.in_(("refund", "reversal")), E.amount > 0)
    return case(
        (and_(E.type == "grant", G.source.in_(PAID_SOURCES)), "purchased"),
        (E.type == "grant", "granted"),
        (and_(E.type == "adjustment", E.amount > 0), "granted"),
        (E.type == "adjustment", "adjusted"),
        (E.type == "debit", "spent"),
        (and_(is_return, R.type == "debit"), "returned"),
        (and_(is_return, R.type == "adjustment"), "adjusted"),
        (E.type == "expiry", "expired"),
        (E.type == "clawback", "refunded"),
        (and_(E.type == "reversal", E.amount < 0), "refunded"),
        else_="other")


def scale_expr():
    """Micros per minor unit of the bucket's currency (money.micros_per_minor, in SQL)."""
    by_scale: dict[int, list[str]] = {}
    for code, scale in money.micros_per_minor_by_code().items():
        by_scale.setdefault(scale, []).append(code)
    return case(*((G.currency.in_(codes), literal(scale)) for scale, codes in by_scale.items()),
                else_=literal(money.micros_per_minor(money.DEFAULT_CURRENCY)))


def value_expr():
    """Value of the allocated credits at the bucket's cost basis, micros (truncated per row)."""
    return case((G.amount > 0, A.credits * G.cost_minor * scale_expr() / G.amount), else_=0)


def day_expr(column=None):
    column = E.created_at if column is None else column
    if db.session.get_bind().dialect.name == "sqlite":
        return type_coerce(func.date(column), Date)
    return cast(column, Date)


def movements(start: datetime | None, end: datetime | None, *, by_day: bool = True):
    """Aggregated movements of entries created in [start, end): day, kind, feature, source,
    currency, credits, value_micros."""
    day = day_expr()
    kind = kind_expr()
    feature = func.coalesce(E.feature, "")
    currency = func.coalesce(G.currency, "")
    keys = [kind.label("kind"), feature.label("feature"), G.source.label("source"),
            currency.label("currency")]
    if by_day:
        keys.insert(0, day.label("day"))
    q = (select(*keys, func.sum(A.credits).label("credits"),
                func.sum(value_expr()).label("value_micros"))
         .select_from(A).join(E, E.id == A.entry_id).join(G, G.id == A.grant_id)
         .outerjoin(R, R.id == E.related_entry_id))
    if start is not None:
        q = q.where(E.created_at >= start)
    if end is not None:
        q = q.where(E.created_at < end)
    # By position: the CASE carries bound literals, which PostgreSQL would not match up between
    # the select list and a repeated GROUP BY expression.
    return q.group_by(*[text(str(i + 1)) for i in range(len(keys))])


def _midnight(d: date) -> datetime:
    return datetime.combine(d, time.min)


@dataclass
class Refreshed:
    days: int
    rows: int
    rolled_through: date | None


def _ranges(days: set[date]) -> list[tuple[date, date]]:
    """Contiguous [first, last] runs of the given days."""
    out: list[list[date]] = []
    for d in sorted(days):
        if out and d == out[-1][1] + timedelta(days=1):
            out[-1][1] = d
        else:
            out.append([d, d])
    return [(a, b) for a, b in out]


def state() -> LedgerRollupState | None:
    return db.session.get(LedgerRollupState, 1)


def refresh(*, now: datetime | None = None, full: bool = False) -> Refreshed:
    """Bring ledger_daily up to the last complete UTC day (see the module docstring)."""
    now = now or utcnow()
    through = (now - SETTLE).date() - timedelta(days=1)
    with atomic() as s:
        st = s.scalar(select(LedgerRollupState).where(LedgerRollupState.id == 1).with_for_update())
        if st is None:
            st = LedgerRollupState(id=1, rolled_through=None, max_entry_id=0)
            s.add(st)
            s.flush()
        top = int(s.scalar(select(func.coalesce(func.max(E.id), 0))))
        days: set[date] = set()
        if full or st.rolled_through is None:
            s.execute(delete(LedgerDaily))
            first = s.scalar(select(func.min(E.created_at)))
            if first is not None and first.date() <= through:
                days = {first.date() + timedelta(days=i)
                        for i in range((through - first.date()).days + 1)}
        else:
            recheck = st.rolled_through - timedelta(days=RECHECK_DAYS - 1)
            days = {recheck + timedelta(days=i) for i in range((through - recheck).days + 1)}
            if top > st.max_entry_id:
                late = s.scalars(select(day_expr().distinct()).where(E.id > st.max_entry_id))
                days |= {d if isinstance(d, date) else date.fromisoformat(d) for d in late}
            days = {d for d in days if d <= through}
        rows = 0
        for first, last in _ranges(days):
            lo, hi = _midnight(first), _midnight(last + timedelta(days=1))
            s.execute(delete(LedgerDaily).where(LedgerDaily.day >= first, LedgerDaily.day <= last))
            cols = ["day", "kind", "feature", "source", "currency", "credits", "value_micros"]
            s.execute(insert(LedgerDaily).from_select(cols, movements(lo, hi)))
            rows += s.scalar(select(func.count()).select_from(LedgerDaily)
                             .where(LedgerDaily.day >= first, LedgerDaily.day <= last))
        st.rolled_through = max(through, st.rolled_through) if st.rolled_through else through
        st.max_entry_id = top
        st.updated_at = utcnow()
        return Refreshed(days=len(days), rows=rows, rolled_through=st.rolled_through)


@dataclass(frozen=True)
class Movement:
    day: date
    kind: str
    feature: str
    source: str
    currency: str
    credits: int
    value_micros: int

    @property
    def paid(self) -> bool:
        return self.source in PAID_SOURCES


def read(first: date, last: date, *, use_rollup: bool = True) -> tuple[list[Movement], date | None]:
    """Movements of the days first..last (inclusive): rolled-up days from ledger_daily, the rest
    live. Returns the movements and the last day served from the rollup (None: all live)."""
    s = db.session
    rolled = None
    out: list[Movement] = []
    live_from = first
    if use_rollup:
        st = state()
        if st is not None and st.rolled_through is not None and st.rolled_through >= first:
            rolled = min(st.rolled_through, last)
            D = LedgerDaily
            q = (select(D.day, D.kind, D.feature, D.source, D.currency, D.credits, D.value_micros)
                 .where(D.day >= first, D.day <= rolled))  # plain rows: no ORM objects to build
            out += [Movement(r[0], r[1], r[2], r[3], r[4], int(r[5]), int(r[6]))
                    for r in s.execute(q)]
            live_from = rolled + timedelta(days=1)
    if live_from <= last:
        q = movements(_midnight(live_from), _midnight(last + timedelta(days=1)))
        for r in s.execute(q):
            d = r.day if isinstance(r.day, date) else date.fromisoformat(r.day)
            out.append(Movement(d, r.kind, r.feature, r.source, r.currency, int(r.credits),
                                int(r.value_micros or 0)))
    return out, rolled
