"""Analytics for a date range: credits in and out per day, spend by feature, revenue, refunds,
breakage, top customers and unit economics (revenue per credit, provider cost, margin, what-if).

Ledger figures come from services.ledger.rollup.read (ledger_daily for rolled-up days, the
ledger itself for the rest); money from payments and refunds (small tables, indexed by time).
Money values at cost basis are in micros (millionths of the major unit), like
FeaturePrice.provider_cost_micros, so that revenue and cost compare exactly.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from sqlalchemy import func, select, text

from models import Customer, FeaturePrice, LedgerEntry, Payment, Refund, db, utcnow
from services.core import params
from services.core import settings as app_settings
from services.core.money import micros_per_minor
from services.ledger import rollup as ledger_rollup
from services.ledger.rollup import Movement, R, day_expr

DEFAULT_DAYS = 30
MAX_DAYS = 731
PAID_STATUSES = ("paid", "partially_refunded", "refunded")
PENDING_REFUNDS = ("requested", "approved", "processing")
TOP = 10


def _date(raw) -> date | None:
    return params.to_date(raw)


@dataclass
class Range:
    first: date
    last: date  # inclusive
    errors: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, args, today: date | None = None) -> Range:
        """?from=&to= (UTC days, inclusive), or ?days=N ending today; 30 days by default."""
        today = today or utcnow().date()
        errors = []
        last = _date(args.get("to")) or today
        if args.get("to") and _date(args.get("to")) is None:
            errors.append("The end date was not a date (YYYY-MM-DD); showing up to today.")
        days = args.get("days", "")
        n = params.to_int(days, max_digits=4) or DEFAULT_DAYS
        n = n if n <= MAX_DAYS else DEFAULT_DAYS
        first = _date(args.get("from")) or last - timedelta(days=n - 1)
        if args.get("from") and _date(args.get("from")) is None:
            errors.append("The start date was not a date (YYYY-MM-DD); showing 30 days.")
        if first > last:
            first, last = last, first
        if (last - first).days >= MAX_DAYS:
            first = last - timedelta(days=MAX_DAYS - 1)
            errors.append(f"At most {MAX_DAYS} days at a time; the range starts on {first}.")
        return cls(first, last, errors)

    @property
    def days(self) -> list[date]:
        return [self.first + timedelta(days=i) for i in range((self.last - self.first).days + 1)]

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first, time.min)

    @property
    def end(self) -> datetime:
        return datetime.combine(self.last + timedelta(days=1), time.min)

    def args(self) -> dict[str, str]:
        return {"from": self.first.isoformat(), "to": self.last.isoformat()}


@dataclass
class FeatureEconomics:
    feature: str
    label: str
    credits: int  # net credits spent (draws minus returns)
    paid_credits: int  # of which drawn from paid buckets in the pricing currency
    units: float
    currency: str  # the pricing currency (provider cost's)
    revenue_micros: int  # value at cost basis of the credits spent, pricing currency
    cost_micros: int  # provider cost of the units
    other_revenue: dict[str, int]  # value of credits from buckets in other currencies
    priced: bool

    @property
    def margin_micros(self) -> int:
        return self.revenue_micros - self.cost_micros

    @property
    def margin_pct(self) -> float | None:
        return self.margin_micros / self.revenue_micros * 100 if self.revenue_micros else None

    @property
    def revenue_per_credit_micros(self) -> float | None:
        return self.revenue_micros / self.paid_credits if self.paid_credits else None

    def what_if_revenue(self, price_minor: int) -> int:
        return self.paid_credits * price_minor * micros_per_minor(self.currency)


@dataclass
class Economics:
    rows: list[FeatureEconomics]
    currency: str
    price_setting_minor: int
    what_if_minor: int

    def total(self, attr: str):
        return sum(getattr(r, attr) for r in self.rows)

    @property
    def revenue_per_credit_micros(self) -> float | None:
        paid = self.total("paid_credits")
        return self.total("revenue_micros") / paid if paid else None

    @property
    def what_if_revenue(self) -> int:
        return sum(r.what_if_revenue(self.what_if_minor) for r in self.rows)

    @property
    def what_if_margin(self) -> int:
        return self.what_if_revenue - self.total("cost_micros")

    @property
    def break_even_minor(self) -> float | None:
        """Price per paid credit at which the paid credits cover the provider cost of all spend."""
        paid = self.total("paid_credits")
        return self.total("cost_micros") / paid / micros_per_minor(self.currency) if paid else None


@dataclass
class Analytics:
    range: Range
    rolled_through: date | None
    days: list[date]
    purchased: list[int]
    granted: list[int]
    spent: list[int]
    expired: list[int]
    clawed: list[int]
    features: list[tuple[str, int, int]]  # (feature, net credits, of which paid)
    revenue: dict[str, dict]  # currency -> {"providers": {p: [per day]}, "total": n, "count": n}
    refunds: dict[str, dict]  # currency -> {"amount": n, "credits": n, "count": n, "per_day": [..]}
    pending_refunds: int
    breakage_paid: list[int]
    breakage_promo: list[int]
    breakage_value: dict[str, int]  # currency -> micros
    top: list[dict]
    economics: Economics

    def total(self, series: str) -> int:
        return sum(getattr(self, series))


def _series(days: list[date], movements: list[Movement], kinds: tuple[str, ...], sign: int = 1,
            paid: bool | None = None) -> list[int]:
    index = {d: i for i, d in enumerate(days)}
    out = [0] * len(days)
    for m in movements:
        if m.kind in kinds and m.day in index and (paid is None or m.paid == paid):
            out[index[m.day]] += sign * m.credits
    return out


def _revenue(rng: Range) -> dict[str, dict]:
    q = (select(day_expr(Payment.paid_at).label("day"), Payment.provider, Payment.currency,
                func.sum(Payment.amount_minor), func.count())
         .where(Payment.status.in_(PAID_STATUSES), Payment.paid_at >= rng.start,
                Payment.paid_at < rng.end)
         .group_by(text("1"), text("2"), text("3")))
    index = {d: i for i, d in enumerate(rng.days)}
    out: dict[str, dict] = {}
    for day, provider, currency, amount, n in db.session.execute(q):
        day = day if isinstance(day, date) else date.fromisoformat(day)
        cur = out.setdefault(currency, {"providers": {}, "total": 0, "count": 0})
        series = cur["providers"].setdefault(provider, [0] * len(index))
        series[index[day]] += int(amount)
        cur["total"] += int(amount)
        cur["count"] += int(n)
    return dict(sorted(out.items()))


def _refunds(rng: Range) -> tuple[dict[str, dict], int]:
    q = (select(day_expr(Refund.processed_at).label("day"), Refund.currency,
                func.sum(Refund.amount_minor), func.sum(Refund.credits), func.count())
         .where(Refund.status == "processed", Refund.processed_at >= rng.start,
                Refund.processed_at < rng.end)
         .group_by(text("1"), text("2")))
    index = {d: i for i, d in enumerate(rng.days)}
    out: dict[str, dict] = {}
    for day, currency, amount, credits, n in db.session.execute(q):
        day = day if isinstance(day, date) else date.fromisoformat(day)
        cur = out.setdefault(currency, {"amount": 0, "credits": 0, "count": 0,
                                        "per_day": [0] * len(index)})
        cur["amount"] += int(amount)
        cur["credits"] += int(credits or 0)
        cur["count"] += int(n)
        cur["per_day"][index[day]] += int(amount)
    pending = db.session.scalar(select(func.count(Refund.id)).where(
        Refund.status.in_(PENDING_REFUNDS))) or 0
    return dict(sorted(out.items())), int(pending)


def top_customers(rng: Range, limit: int = TOP) -> list[dict]:
    """Customers who spent the most credits in the range (net of returned credits).

    Two narrow queries instead of one self-join: debits through the (type, created_at) index,
    and the few returns joined to the debits they return."""
    E = LedgerEntry
    inside = (E.created_at >= rng.start, E.created_at < rng.end)
    spent: dict[int, int] = defaultdict(int)
    for cid, total in db.session.execute(
            select(E.customer_id, func.sum(E.amount)).where(E.type == "debit", *inside)
            .group_by(E.customer_id)):
        spent[cid] -= int(total)
    for cid, total in db.session.execute(
            select(E.customer_id, func.sum(E.amount)).join(R, R.id == E.related_entry_id)
            .where(E.type.in_(("refund", "reversal")), E.amount > 0, R.type == "debit", *inside)
            .group_by(E.customer_id)):
        spent[cid] -= int(total)
    ranked = sorted(((c, v) for c, v in spent.items() if v > 0), key=lambda t: (-t[1], t[0]))[:limit]
    ids = [c for c, _v in ranked]
    if not ids:
        return []
    people = {c.id: c for c in db.session.scalars(select(Customer).where(Customer.id.in_(ids)))}
    paid: dict[int, dict[str, int]] = defaultdict(dict)
    for cid, currency, amount in db.session.execute(
            select(Payment.customer_id, Payment.currency, func.sum(Payment.amount_minor))
            .where(Payment.customer_id.in_(ids), Payment.status.in_(PAID_STATUSES),
                   Payment.paid_at >= rng.start, Payment.paid_at < rng.end)
            .group_by(Payment.customer_id, Payment.currency)):
        paid[cid][currency] = int(amount)
    return [{"customer": people[c], "credits": v, "paid": dict(sorted(paid[c].items()))}
            for c, v in ranked]


def _economics(movements: list[Movement], what_if: int | None) -> Economics:
    prices = {p.feature: p for p in db.session.scalars(select(FeaturePrice))}
    currency = next((p.currency for p in prices.values() if p.archived_at is None), "USD")
    credits: dict[str, int] = defaultdict(int)
    paid: dict[tuple[str, str], int] = defaultdict(int)
    value: dict[tuple[str, str], int] = defaultdict(int)
    for m in movements:
        if m.kind in ("spent", "returned") and m.feature:
            credits[m.feature] -= m.credits
            value[(m.feature, m.currency)] -= m.value_micros
            if m.paid:
                paid[(m.feature, m.currency)] -= m.credits
    rows = []
    for feature in sorted(credits, key=lambda f: -credits[f]):
        fp = prices.get(feature)
        cur = fp.currency if fp else currency
        units = credits[feature] / fp.credits_per_unit if fp and fp.credits_per_unit else 0.0
        cost = round(units * fp.provider_cost_micros) if fp else 0
        other = {c: v for (f, c), v in value.items() if f == feature and c != cur and v}
        rows.append(FeatureEconomics(
            feature=feature, label=fp.label if fp and fp.label else feature,
            credits=credits[feature], paid_credits=paid.get((feature, cur), 0), units=units,
            currency=cur, revenue_micros=value.get((feature, cur), 0), cost_micros=cost,
            other_revenue=dict(sorted(other.items())), priced=fp is not None))
    setting = int(app_settings.get("price_per_credit_minor"))
    return Economics(rows=rows, currency=currency, price_setting_minor=setting,
                     what_if_minor=setting if what_if is None else what_if)


def build(rng: Range, *, what_if_price_minor: int | None = None, use_rollup: bool = True) -> Analytics:
    """Every figure of the analytics page for the range."""
    moves, rolled = ledger_rollup.read(rng.first, rng.last, use_rollup=use_rollup)
    days = rng.days
    feature_credits: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    breakage_value: dict[str, int] = defaultdict(int)
    for m in moves:
        if m.kind in ("spent", "returned"):
            feature_credits[m.feature or "(none)"][0] -= m.credits
            if m.paid:
                feature_credits[m.feature or "(none)"][1] -= m.credits
        elif m.kind == "expired" and m.value_micros:
            breakage_value[m.currency] -= m.value_micros
    features = sorted(((f, c, p) for f, (c, p) in feature_credits.items() if c),
                      key=lambda t: (-t[1], t[0]))
    refunds, pending = _refunds(rng)
    spent_draws = _series(days, moves, ("spent",), -1)
    returned = _series(days, moves, ("returned",))
    return Analytics(
        range=rng, rolled_through=rolled, days=days,
        purchased=_series(days, moves, ("purchased",)),
        granted=_series(days, moves, ("granted",)),
        spent=[a - b for a, b in zip(spent_draws, returned, strict=True)],
        expired=_series(days, moves, ("expired",), -1),
        clawed=_series(days, moves, ("refunded",), -1),
        features=features, revenue=_revenue(rng), refunds=refunds, pending_refunds=pending,
        breakage_paid=_series(days, moves, ("expired",), -1, paid=True),
        breakage_promo=_series(days, moves, ("expired",), -1, paid=False),
        breakage_value=dict(sorted(breakage_value.items())),
        top=top_customers(rng), economics=_economics(moves, what_if_price_minor))


def economics(rng: Range, *, what_if_price_minor: int | None = None) -> Economics:
    """Only the unit economics (the what-if form asks for this alone)."""
    moves, _rolled = ledger_rollup.read(rng.first, rng.last)
    return _economics(moves, what_if_price_minor)
