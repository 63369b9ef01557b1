"""Roll-forward of credits for a month, per currency, paid vs promotional, in credits and at cost.

    opening + purchased + granted - spent + returned - adjusted - expired - refunded = closing

Every line is a sum of allocations (the credits of one ledger entry through one bucket), so it
is known which bucket, hence which source (paid: purchase/subscription; promotional: the rest),
currency and cost basis each movement touched. Kinds come from services.ledger.rollup.kind_expr,
the same classification as the analytics page. Opening is every allocation before the month,
closing every allocation before its end: the identity holds by construction, and the report
proves that it agrees with the ledger itself (checks): entries, account balances and buckets.

Values: a bucket's credits are valued at its cost basis (cost_minor / amount per credit), kept
as exact fractions; lines are rounded cumulatively (each rounded line is the difference of two
rounded running totals), so rounded lines add up exactly to the rounded closing value.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from fractions import Fraction

from sqlalchemy import and_, case, func, or_, select, text, true

from models import Account, CreditGrant, db, utcnow
from services.core import csvsafe
from services.ledger.rollup import A, E, G, R, kind_expr
from services.ledger.rules import PAID_SOURCES

LINES = [  # key, label, sign shown in the formula
    ("opening", "Opening balance", ""),
    ("purchased", "Purchased (payments, subscriptions)", "+"),
    ("granted", "Granted (promotions, distributions, adjustments up)", "+"),
    ("spent", "Spent (debits)", "−"),
    ("returned", "Returned (task and debit refunds)", "+"),
    ("adjusted", "Adjusted down (staff corrections)", "−"),
    ("expired", "Expired unused (breakage)", "−"),
    ("refunded", "Refunded / clawed back / reversed", "−"),
    ("other", "Other", "±"),
]
FLOWS = [k for k, _l, _s in LINES if k != "opening"]
CLASSES = ("paid", "promotional")


def month_bounds(period: str) -> tuple[datetime, datetime]:
    """'2026-03' -> [2026-03-01 00:00, 2026-04-01 00:00)."""
    first = datetime.strptime(period, "%Y-%m")
    nxt = first.replace(year=first.year + (first.month == 12), month=first.month % 12 + 1)
    return first, nxt


def parse_period(raw: str | None, today: date | None = None) -> str:
    today = today or utcnow().date()
    try:
        return datetime.strptime((raw or "").strip(), "%Y-%m").strftime("%Y-%m")
    except ValueError:
        return today.strftime("%Y-%m")


def periods() -> list[str]:
    """Months from the first ledger entry to this month, newest first."""
    first = db.session.scalar(select(func.min(E.created_at)))
    now = utcnow()
    out = []
    y, m = (first.year, first.month) if first else (now.year, now.month)
    while (y, m) <= (now.year, now.month):
        out.append(f"{y:04d}-{m:02d}")
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out[::-1]


@dataclass
class Group:
    cls: str  # paid | promotional
    currency: str  # '' for buckets without one (promotional credits carry no money)
    credits: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    value: dict[str, Fraction] = field(default_factory=lambda: defaultdict(Fraction))

    @property
    def closing(self) -> int:
        return sum(self.credits[k] for k in ["opening", *FLOWS])

    @property
    def closing_value(self) -> Fraction:
        return sum((self.value[k] for k in ["opening", *FLOWS]), Fraction(0))

    def rows(self) -> list[dict]:
        """Lines with credits and value in minor units, cumulatively rounded, then the closing."""
        out, running, shown = [], Fraction(0), 0
        for key, label, sign in LINES:
            if key == "other" and not self.credits[key] and not self.value[key]:
                continue
            running += self.value[key]
            value = round(running) - shown
            shown += value
            out.append({"line": key, "label": label, "sign": sign, "credits": self.credits[key],
                        "value_minor": value})
        out.append({"line": "closing", "label": "Closing balance", "sign": "=",
                    "credits": self.closing, "value_minor": round(self.closing_value)})
        return out


@dataclass
class Check:
    name: str
    expected: int
    actual: int

    @property
    def ok(self) -> bool:
        return self.expected == self.actual


@dataclass
class Report:
    period: str
    start: datetime
    end: datetime
    groups: list[Group]
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def total(self, key: str) -> int:
        return sum(g.closing if key == "closing" else g.credits[key] for g in self.groups)

    def table(self) -> list[dict]:
        """One row per line with a cell ({credits, value_minor} or None) per group."""
        per = [{x["line"]: x for x in g.rows()} for g in self.groups]
        labels = {k: (label, sign) for k, label, sign in LINES} | {"closing": ("Closing balance", "=")}
        keys = [k for k, _l, _s in LINES if k != "other" or any("other" in p for p in per)]
        return [{"line": k, "label": labels[k][0], "sign": labels[k][1],
                 "cells": [p.get(k) for p in per]} for k in [*keys, "closing"]]


def _class_expr():
    return case((G.source.in_(PAID_SOURCES), "paid"), else_="promotional")


def _add(groups: dict, cls: str, currency: str | None, cost, amount, key: str, credits: int,
         sign: int = 1) -> None:
    g = groups.setdefault((cls, currency or ""), Group(cls, currency or ""))
    g.credits[key] += sign * int(credits)
    if amount and cost:
        g.value[key] += sign * Fraction(int(credits) * int(cost), int(amount))


def _movements(line, *where) -> list:
    """Allocations summed per (class, currency, cost basis, line). Buckets of one cost basis
    share a value per credit, so the value of each sum is exact: credits x cost / amount."""
    q = (select(_class_expr(), G.currency, G.cost_minor, G.amount, line, func.sum(A.credits))
         .select_from(A).join(E, E.id == A.entry_id).join(G, G.id == A.grant_id)
         .outerjoin(R, R.id == E.related_entry_id).where(*where)
         .group_by(*[text(str(i)) for i in range(1, 6)]))
    return db.session.execute(q).all()


def _groups(start: datetime, end: datetime, from_end: bool) -> list[Group]:
    """Every line of every group. From the beginning: opening = allocations before the month.
    From the end (recent months, fewer rows to read): closing = the buckets now minus what moved
    after the month; opening = closing minus the month's lines. Both give the same figures
    while the ledger's invariants hold (checked by services.ledger.reconcile)."""
    groups: dict[tuple[str, str], Group] = {}
    if not from_end:
        line = case((E.created_at < start, "opening"), else_=kind_expr())
        for cls, cur, cost, amount, key, credits in _movements(line, E.created_at < end):
            _add(groups, cls, cur, cost, amount, key, credits)
    else:
        now = (select(_class_expr(), G.currency, G.cost_minor, G.amount, func.sum(G.remaining))
               .group_by(*[text(str(i)) for i in range(1, 5)]))
        for cls, cur, cost, amount, credits in db.session.execute(now):
            _add(groups, cls, cur, cost, amount, "opening", credits)
        line = case((E.created_at >= end, "after"), else_=kind_expr())
        for cls, cur, cost, amount, key, credits in _movements(line, E.created_at >= start):
            # Subtract what moved after the month, and the month's own lines, from today's state.
            _add(groups, cls, cur, cost, amount, "opening", credits, sign=-1)
            if key != "after":
                _add(groups, cls, cur, cost, amount, key, credits)
    for g in groups.values():
        g.credits.pop("after", None)
        g.value.pop("after", None)
    return [groups[k] for k in sorted(groups, key=lambda k: (CLASSES.index(k[0]), k[1]))
            if any(groups[k].credits.values()) or groups[k].closing]


def _checks(groups: list[Group], start: datetime, end: datetime, from_end: bool) -> list[Check]:
    """The report against the ledger's own entries, line by line, in one scan of the entries."""
    def total(key):
        return sum(g.closing if key == "closing" else g.credits[key] for g in groups)

    inside = and_(E.created_at >= start, E.created_at < end)
    ret = and_(E.type.in_(("refund", "reversal")), E.amount > 0)
    conds = {
        "grants": or_(E.type == "grant", and_(E.type == "adjustment", E.amount > 0)),
        "spent": E.type == "debit",
        "returned": and_(ret, R.type == "debit"),
        "adjusted": or_(and_(E.type == "adjustment", E.amount < 0), and_(ret, R.type == "adjustment")),
        "expired": E.type == "expiry",
        "refunded": or_(E.type == "clawback", and_(E.type == "reversal", E.amount < 0)),
        "month": true(),
    }
    cols = [func.coalesce(func.sum(case((and_(inside, c), E.amount), else_=0)), 0) for c in conds.values()]
    if from_end:
        cols.append(func.coalesce(func.sum(case((E.created_at >= end, E.amount), else_=0)), 0))
        where = E.created_at >= start
    else:
        cols.append(func.coalesce(func.sum(case((E.created_at < start, E.amount), else_=0)), 0))
        where = E.created_at < end
    row = db.session.execute(select(*cols).select_from(E).outerjoin(R, R.id == E.related_entry_id)
                             .where(where)).one()
    sums = dict(zip(conds, (int(v) for v in row[:-1]), strict=True))
    balances = int(db.session.scalar(select(func.coalesce(func.sum(Account.balance), 0))) or 0)
    if from_end:  # entries before the month's end = all entries (the balances) - those after it
        closing = balances - int(row[-1])
        opening = closing - sums["month"]
    else:
        opening = int(row[-1])
        closing = opening + sums["month"]
    checks = [
        Check("opening = sum of ledger entries before the month", opening, total("opening")),
        Check("closing = sum of ledger entries before the month's end", closing, total("closing")),
        Check("purchased + granted = grant entries + positive adjustments", sums["grants"],
              total("purchased") + total("granted")),
        Check("spent = debit entries", sums["spent"], total("spent")),
        Check("returned = refunds and reversals of debits", sums["returned"], total("returned")),
        Check("adjusted = negative adjustments and their returns", sums["adjusted"], total("adjusted")),
        Check("expired = expiry entries", sums["expired"], total("expired")),
        Check("refunded = claw-backs and grant reversals", sums["refunded"], total("refunded")),
        Check("nothing unclassified", 0, total("other")),
    ]
    if end > utcnow():  # the month is still open: its closing is today's state
        checks.append(Check("closing = sum of account balances now", balances, total("closing")))
        by_class: dict[str, int] = defaultdict(int)
        for source, remaining in db.session.execute(
                select(CreditGrant.source, func.sum(CreditGrant.remaining)).group_by(CreditGrant.source)):
            by_class["paid" if source in PAID_SOURCES else "promotional"] += int(remaining)
        for cls in CLASSES:
            checks.append(Check(f"closing {cls} = unused credits in {cls} buckets now",
                                by_class.get(cls, 0),
                                sum(g.closing for g in groups if g.cls == cls)))
    return checks


def _snapshot() -> None:
    """Read the whole report from one snapshot (PostgreSQL REPEATABLE READ), so that debits
    committed while it runs cannot make its queries disagree."""
    s = db.session()  # the Session behind the scoped proxy
    if s.in_transaction():
        s.rollback()
    if s.get_bind().dialect.name == "postgresql":
        s.connection(execution_options={"isolation_level": "REPEATABLE READ"})


def build(period: str, *, direction: str = "auto") -> Report:
    """The roll-forward of one month (UTC). direction: auto (whichever side of the ledger is
    smaller to read), "start" (from the first entry) or "end" (back from today's buckets)."""
    start, end = month_bounds(period)
    _snapshot()
    try:
        first = db.session.scalar(select(func.min(E.created_at)))
        if direction == "auto":
            from_end = first is not None and utcnow() - start < start - first
        else:
            from_end = direction == "end"
        groups = _groups(start, end, from_end)
        checks = _checks(groups, start, end, from_end)
    finally:
        db.session.rollback()
    return Report(period=period, start=start, end=end, groups=groups, checks=checks)


def remaining_value_now() -> dict[tuple[str, str], Fraction]:
    """Unused credits valued at cost, per (class, currency), from the buckets themselves."""
    out: dict[tuple[str, str], Fraction] = defaultdict(Fraction)
    for g in db.session.scalars(select(CreditGrant).where(CreditGrant.remaining != 0,
                                                          CreditGrant.cost_minor > 0)):
        cls = "paid" if g.source in PAID_SOURCES else "promotional"
        out[(cls, g.currency or "")] += Fraction(g.remaining * g.cost_minor, g.amount)
    return out


HEADER = ["period", "credit_class", "currency", "line", "label", "credits", "value_minor",
          "ledger_credits"]


def csv_text(report: Report) -> str:
    """The report as CSV (numbers as numbers; text through the same neutralisation as exports)."""
    rows = []
    for g in report.groups:
        for r in g.rows():
            rows.append([report.period, g.cls, g.currency, r["line"], r["label"], r["credits"],
                         r["value_minor"], None])
    for c in report.checks:  # the report's figure next to the ledger's own
        rows.append([report.period, "check", "", "ok" if c.ok else "MISMATCH", c.name, c.actual,
                     None, c.expected])
    return csvsafe.dumps(HEADER, rows)
