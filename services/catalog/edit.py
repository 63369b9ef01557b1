"""The catalogue staff edit: plans, credit packages and feature prices.

Create, edit, archive (instead of delete once something refers to the row) and unarchive,
each audited with before/after. A change of what customers pay or receive can be previewed
first (`impact`): how many customers and how many credits per month it touches.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import case, func, select
from sqlalchemy.exc import IntegrityError

from models import (
    CreditGrant,
    CreditPackage,
    Customer,
    FeaturePrice,
    LedgerEntry,
    Payment,
    Plan,
    Task,
    db,
    utcnow,
)
from models.catalog import PACKAGE_PRICING, PLAN_INTERVALS
from services.catalog import packages as package_prices
from services.core import audit
from services.core import settings as app_settings
from services.core.db import atomic
from services.core.errors import NotFound, ValidationFailed

CODE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
MAX_AMOUNT = 10**12
USAGE_DAYS = 30


@dataclass(frozen=True)
class Kind:
    name: str  # plan | package | price
    model: type
    fields: tuple[str, ...]
    key: str  # the immutable business key
    action: str  # audit prefix
    label: str


KINDS = {
    "plan": Kind("plan", Plan, ("code", "name", "interval", "price_minor", "currency",
                                "monthly_credits", "credit_expiry_days", "stripe_price_id",
                                "description", "low_balance_threshold"), "code", "plans", "Plan"),
    "package": Kind("package", CreditPackage, ("code", "name", "credits", "price_minor",
                                               "currency", "expiry_days", "sort_order",
                                               "pricing", "discount_bp"),
                    "code", "packages", "Credit package"),
    "price": Kind("price", FeaturePrice, ("feature", "label", "unit", "credits_per_unit",
                                          "provider_cost_micros", "currency"),
                  "feature", "pricing", "Feature price"),
}
# The fields whose change alters what customers pay or receive: previewed before saving.
IMPACT_FIELDS = {"plan": ("monthly_credits", "price_minor"),
                 "package": ("credits", "price_minor", "pricing", "discount_bp"),
                 "price": ("credits_per_unit",)}


@dataclass
class ListPage:
    rows: list
    more: bool
    next_after: int | None
    usage: dict[int, int] = field(default_factory=dict)  # id -> customers / purchases / units
    prices: dict[int, int | None] = field(default_factory=dict)  # package id -> effective price


def _kind(kind: str) -> Kind:
    return KINDS[kind]


def get(kind: str, item_id: int):
    k = _kind(kind)
    obj = db.session.get(k.model, item_id)
    if obj is None:
        raise NotFound(f"{k.label} {item_id} not found.")
    return obj


def list_items(kind: str, *, status: str = "active", after_id: int | None = None,
               limit: int = 50) -> ListPage:
    """Items by id, keyset-paged; status active | archived | all."""
    k = _kind(kind)
    q = select(k.model)
    if status == "active":
        q = q.where(k.model.archived_at.is_(None))
    elif status == "archived":
        q = q.where(k.model.archived_at.is_not(None))
    if after_id is not None:
        q = q.where(k.model.id > after_id)
    rows = list(db.session.scalars(q.order_by(k.model.id).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return ListPage(rows=rows, more=more, next_after=rows[-1].id if more else None,
                    usage=_usage(kind, rows),
                    prices=package_prices.effective_prices(rows) if kind == "package" else {})


def _usage(kind: str, rows: list) -> dict[int, int]:
    """One grouped query per page: customers on each plan, purchases of each package (30 days),
    units of each feature used (30 days)."""
    if not rows:
        return {}
    ids = [r.id for r in rows]
    s = db.session
    since = utcnow() - timedelta(days=USAGE_DAYS)
    if kind == "plan":
        res = s.execute(select(Customer.plan_id, func.count(Customer.id))
                        .where(Customer.plan_id.in_(ids), Customer.deleted_at.is_(None))
                        .group_by(Customer.plan_id))
        return {pid: int(n) for pid, n in res}
    if kind == "package":
        res = s.execute(select(Payment.package_id, func.count(Payment.id))
                        .where(Payment.package_id.in_(ids), Payment.paid_at >= since)
                        .group_by(Payment.package_id))
        return {pid: int(n) for pid, n in res}
    by_feature = {r.feature: r.id for r in rows}
    res = s.execute(select(LedgerEntry.feature, func.sum(func.coalesce(LedgerEntry.quantity, 1)))
                    .where(LedgerEntry.feature.in_(list(by_feature)), LedgerEntry.type == "debit",
                           LedgerEntry.created_at >= since)
                    .group_by(LedgerEntry.feature))
    return {by_feature[f]: int(n or 0) for f, n in res}


# --- validation --------------------------------------------------------------------------------

def _int(data: dict, name: str, errors: dict, *, minimum: int = 0, optional: bool = False):
    raw = data.get(name)
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        if optional:
            return None
        errors[name] = "required"
        return None
    try:
        value = int(str(raw).strip().replace(",", ""))
    except ValueError:
        errors[name] = "must be a whole number"
        return None
    if value < minimum:
        errors[name] = f"must be at least {minimum:,}"
    elif value > MAX_AMOUNT:
        errors[name] = "is too large"
    return value


def _text(data: dict, name: str, errors: dict, *, max_len: int, required: bool = True) -> str:
    value = (data.get(name) or "").strip()
    if required and not value:
        errors[name] = "required"
    elif len(value) > max_len:
        errors[name] = f"at most {max_len} characters"
    return value


def clean(kind: str, data: dict, *, existing=None) -> dict:
    """Validate submitted fields into typed values; ValidationFailed names each bad field."""
    errors: dict[str, str] = {}
    out: dict = {}
    k = _kind(kind)
    if existing is None:
        key = (data.get(k.key) or "").strip().lower()
        if not CODE.match(key):
            errors[k.key] = "lower-case letters, digits, dot, dash or underscore (up to 64)"
        out[k.key] = key
    currency = (data.get("currency") or "USD").strip().upper()
    if not re.fullmatch(r"[A-Z]{3}", currency):
        errors["currency"] = "a three-letter ISO code such as USD"
    out["currency"] = currency
    if kind == "plan":
        out["name"] = _text(data, "name", errors, max_len=120)
        out["interval"] = (data.get("interval") or "").strip()
        if out["interval"] not in PLAN_INTERVALS:
            errors["interval"] = "choose free, month, year or lifetime"
        out["price_minor"] = _int(data, "price_minor", errors, optional=True) or 0
        out["monthly_credits"] = _int(data, "monthly_credits", errors)
        out["credit_expiry_days"] = _int(data, "credit_expiry_days", errors, minimum=1,
                                         optional=True)
        out["stripe_price_id"] = _text(data, "stripe_price_id", errors, max_len=128,
                                       required=False) or None
        out["description"] = _text(data, "description", errors, max_len=2000, required=False)
        # The low-balance notice threshold of the plan's customers (empty: the setting's).
        out["low_balance_threshold"] = _int(data, "low_balance_threshold", errors, minimum=0,
                                            optional=True)
        if out["interval"] == "free" and out.get("price_minor"):
            errors["price_minor"] = "a free plan costs nothing"
    elif kind == "package":
        out["name"] = _text(data, "name", errors, max_len=120)
        out["credits"] = _int(data, "credits", errors, minimum=1)
        out["expiry_days"] = _int(data, "expiry_days", errors, minimum=1, optional=True)
        out["sort_order"] = _int(data, "sort_order", errors, optional=True) or 0
        _clean_package_price(data, out, errors, existing)
    else:
        out["label"] = _text(data, "label", errors, max_len=120)
        out["unit"] = _text(data, "unit", errors, max_len=32) or "request"
        out["credits_per_unit"] = _int(data, "credits_per_unit", errors)
        out["provider_cost_micros"] = _int(data, "provider_cost_micros", errors, optional=True) or 0
    if errors:
        first = next(iter(errors.items()))
        raise ValidationFailed(f"Check the form: {first[0].replace('_', ' ')} {first[1]}.",
                               details=errors)
    return out


def _clean_package_price(data: dict, out: dict, errors: dict, existing) -> None:
    """A fixed price, or the price per credit of the currency less a discount (0-90%)."""
    pricing = (data.get("pricing") or "fixed").strip()
    if pricing not in PACKAGE_PRICING:
        errors["pricing"] = "choose a fixed price or the price per credit"
    out["pricing"] = pricing
    bp = _int(data, "discount_bp", errors, optional=True) or 0
    if "discount_bp" not in errors and bp > package_prices.MAX_DISCOUNT_BP:
        errors["discount_bp"] = "must be between 0% and 90%"
    out["discount_bp"] = bp
    if pricing != "per_credit":
        out["price_minor"] = _int(data, "price_minor", errors, minimum=1)
        if bp and "discount_bp" not in errors:
            errors["discount_bp"] = "applies only to a package priced per credit; set it to 0"
        return
    currency = out["currency"]
    ppc = package_prices.price_per_credit(currency)
    if ppc is None and "currency" not in errors:
        have = ", ".join(c for c in package_prices.currencies()
                         if package_prices.price_per_credit(c))
        errors["pricing"] = (f"there is no price per credit in {currency} (Settings); "
                             f"{'there is one in ' + have if have else 'none is set'}")
    # The fixed price is kept (for going back to fixed); a new package starts with today's.
    price = _int(data, "price_minor", errors, minimum=1, optional=True)
    if price is None:
        price = existing.price_minor if existing is not None else None
    if price is None and ppc and out.get("credits") and "discount_bp" not in errors:
        price = package_prices.per_credit_amount(credits=out["credits"], price_per_credit=ppc,
                                                 discount_bp=bp)
    out["price_minor"] = price or 1


def snapshot(kind: str, obj) -> dict:
    return {f: getattr(obj, f) for f in _kind(kind).fields}


def changes(kind: str, obj, values: dict) -> dict[str, tuple]:
    """field -> (old, new) for each field `values` would change."""
    return {f: (getattr(obj, f), v) for f, v in values.items()
            if f in _kind(kind).fields and getattr(obj, f) != v}


def needs_preview(kind: str, obj, values: dict) -> bool:
    """Whether saving `values` changes what customers pay or receive."""
    return any(f in IMPACT_FIELDS[kind] for f in changes(kind, obj, values))


# --- writes ------------------------------------------------------------------------------------

def create(kind: str, data: dict, *, staff, ip: str | None = None):
    """Add a plan, package or feature price; its key (code / feature) must be new."""
    k = _kind(kind)
    values = clean(kind, data)
    try:
        with atomic() as s:
            if s.scalar(select(k.model.id).where(getattr(k.model, k.key) == values[k.key])):
                raise ValidationFailed(f"{k.label} {values[k.key]!r} exists already.",
                                       details={k.key: "already exists"})
            obj = k.model(**values)
            s.add(obj)
            s.flush()
            audit.record(action=f"{k.action}.create", staff=staff, target_type=kind,
                         target_id=obj.id, before=None, after=_jsonable(values), ip=ip)
            return obj
    except IntegrityError:
        raise ValidationFailed(f"{k.label} {values[k.key]!r} exists already.",
                               details={k.key: "already exists"}) from None


def update(kind: str, item_id: int, data: dict, *, staff, ip: str | None = None,
           reason: str | None = None):
    """Edit an item (its key stays); audited with the fields that changed, before and after."""
    k = _kind(kind)
    with atomic() as s:
        obj = s.get(k.model, item_id, with_for_update=True)
        if obj is None:
            raise NotFound(f"{k.label} {item_id} not found.")
        values = clean(kind, data, existing=obj)
        diff = changes(kind, obj, values)
        if not diff:
            return obj
        for f, (_old, new) in diff.items():
            setattr(obj, f, new)
        obj.updated_at = utcnow()
        audit.record(action=f"{k.action}.update", staff=staff, target_type=kind, target_id=obj.id,
                     before=_jsonable({f: o for f, (o, _n) in diff.items()}),
                     after=_jsonable({f: n for f, (_o, n) in diff.items()}), reason=reason, ip=ip)
        return obj


def references(kind: str, obj) -> dict[str, int]:
    """What refers to this item (a referenced item is archived, never deleted)."""
    s = db.session
    if kind == "plan":
        return {"customers": s.scalar(select(func.count(Customer.id)).where(Customer.plan_id == obj.id)),
                "payments": s.scalar(select(func.count(Payment.id)).where(Payment.plan_id == obj.id)),
                "grants": s.scalar(select(func.count(CreditGrant.id))
                                   .where(CreditGrant.plan_id == obj.id))}
    if kind == "package":
        return {"payments": s.scalar(select(func.count(Payment.id))
                                     .where(Payment.package_id == obj.id))}
    used = s.scalar(select(LedgerEntry.id).where(LedgerEntry.feature == obj.feature).limit(1))
    tasks = s.scalar(select(Task.id).where(Task.type == obj.feature).limit(1))
    return {"ledger entries": 1 if used else 0, "tasks": 1 if tasks else 0}


def _set_archived(kind: str, item_id: int, archived: bool, *, staff, ip: str | None):
    k = _kind(kind)
    with atomic() as s:
        obj = s.get(k.model, item_id, with_for_update=True)
        if obj is None:
            raise NotFound(f"{k.label} {item_id} not found.")
        if (obj.archived_at is not None) == archived:
            return obj
        before = obj.archived_at
        obj.archived_at = utcnow() if archived else None
        audit.record(action=f"{k.action}.{'archive' if archived else 'unarchive'}", staff=staff,
                     target_type=kind, target_id=obj.id,
                     before={"archived_at": _jsonable(before)},
                     after={"archived_at": _jsonable(obj.archived_at)}, ip=ip)
        return obj


def archive(kind: str, item_id: int, *, staff, ip: str | None = None):
    """Hide from the catalogue (API and checkout); history keeps pointing at it."""
    return _set_archived(kind, item_id, True, staff=staff, ip=ip)


def unarchive(kind: str, item_id: int, *, staff, ip: str | None = None):
    return _set_archived(kind, item_id, False, staff=staff, ip=ip)


def delete(kind: str, item_id: int, *, staff, ip: str | None = None) -> tuple[str, dict]:
    """Delete an unreferenced item; a referenced one is archived instead. Returns what happened."""
    k = _kind(kind)
    with atomic() as s:
        obj = s.get(k.model, item_id, with_for_update=True)
        if obj is None:
            raise NotFound(f"{k.label} {item_id} not found.")
        refs = {name: n for name, n in references(kind, obj).items() if n}
        if refs:
            if obj.archived_at is None:
                obj.archived_at = utcnow()
                audit.record(action=f"{k.action}.archive", staff=staff, target_type=kind,
                             target_id=obj.id, before={"archived_at": None},
                             after={"archived_at": _jsonable(obj.archived_at)},
                             reason="delete asked; referenced, so archived", ip=ip)
            return "archived", refs
        before = snapshot(kind, obj)
        s.delete(obj)
        audit.record(action=f"{k.action}.delete", staff=staff, target_type=kind, target_id=item_id,
                     before=_jsonable(before), after=None, ip=ip)
        return "deleted", {}


def _n(n: int, word: str) -> str:
    """1 customer, 2 customers, 1,000 purchases."""
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def _jsonable(v):
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if hasattr(v, "isoformat"):
        return v.isoformat(timespec="seconds")
    return v


# --- impact preview ------------------------------------------------------------------------------

@dataclass
class Impact:
    """What a change would do, per month: customers touched, credits and money before/after."""

    kind: str
    customers: int
    basis: str
    credits_old: int = 0
    credits_new: int = 0
    money_old: int | None = None
    money_new: int | None = None
    currency: str = "USD"
    money_label: str = ""
    notes: list[str] = field(default_factory=list)
    changes: dict = field(default_factory=dict)

    @property
    def credits_delta(self) -> int:
        return self.credits_new - self.credits_old

    @property
    def money_delta(self) -> int | None:
        if self.money_old is None or self.money_new is None:
            return None
        return self.money_new - self.money_old


def _merged(kind: str, obj, data: dict) -> dict:
    """The item's values with the submitted ones on top (unparseable numbers keep the old)."""
    out = snapshot(kind, obj)
    # A package's currency picks the price per credit it follows.
    for f in IMPACT_FIELDS[kind] + (("currency",) if kind == "package" else ()):
        raw = data.get(f)
        if raw is None or str(raw).strip() == "":
            continue
        if f in ("pricing", "currency"):
            out[f] = str(raw).strip() if f == "pricing" else str(raw).strip().upper()
            continue
        try:
            v = int(str(raw).strip().replace(",", ""))
        except ValueError:
            continue
        if f == "discount_bp" and v > package_prices.MAX_DISCOUNT_BP:
            continue
        if 0 <= v <= MAX_AMOUNT:
            out[f] = v
    return out


def impact(kind: str, item_id: int, data: dict) -> Impact:
    """Preview of saving `data` on an item (read-only)."""
    obj = get(kind, item_id)
    new = _merged(kind, obj, data)
    s = db.session
    since = utcnow() - timedelta(days=USAGE_DAYS)
    diff = {f: (getattr(obj, f), new[f]) for f in IMPACT_FIELDS[kind] if getattr(obj, f) != new[f]}
    if kind == "plan":
        counts = dict(s.execute(
            select(Customer.subscription_status, func.count(Customer.id))
            .where(Customer.plan_id == obj.id, Customer.deleted_at.is_(None))
            .group_by(Customer.subscription_status)).all())
        n = int(sum(counts.values()))
        paying = int(counts.get("active", 0)) + int(counts.get("past_due", 0))
        out = Impact(kind, customers=n, basis=f"{_n(n, 'customer')} on {obj.name}",
                     credits_old=n * obj.monthly_credits, credits_new=n * new["monthly_credits"],
                     currency=obj.currency, changes=diff)
        if obj.interval in ("month", "year"):
            per = "month" if obj.interval == "month" else "year"
            out.money_old, out.money_new = paying * obj.price_minor, paying * new["price_minor"]
            out.money_label = f"Subscription revenue per {per} ({paying:,} paying)"
            if "price_minor" in diff:
                out.notes.append("A new price applies to new checkouts; existing Stripe "
                                 "subscriptions keep their price until they are migrated.")
        return out
    if kind == "package":
        n, buyers = s.execute(select(func.count(Payment.id), func.count(func.distinct(Payment.customer_id)))
                              .where(Payment.package_id == obj.id, Payment.paid_at >= since)).one()
        n, buyers = int(n or 0), int(buyers or 0)
        if new["pricing"] not in ("fixed", "per_credit"):
            new["pricing"] = obj.pricing
        if new["pricing"] == "fixed":
            diff.pop("discount_bp", None)
        if new["pricing"] == "per_credit":
            diff.pop("price_minor", None)  # kept for going back to fixed; not what is charged
        price_old = package_prices.effective_price(obj)
        price_new = package_prices.effective_price(CreditPackage(**{
            f: new[f] for f in ("credits", "price_minor", "currency", "pricing", "discount_bp")}))
        out = Impact(kind, customers=buyers,
                     basis=f"{_n(n, 'purchase')} by {_n(buyers, 'customer')} in the last {USAGE_DAYS} days",
                     credits_old=n * obj.credits, credits_new=n * new["credits"],
                     currency=obj.currency, money_label="Revenue per month at that volume",
                     changes=diff)
        if price_old is not None and price_new is not None:
            out.money_old, out.money_new = n * price_old, n * price_new
        if price_new is None:
            out.notes.append(f"No price per credit is set in {new['currency']}: it could not be "
                             "sold priced per credit.")
        elif new["pricing"] == "per_credit":
            out.notes.append("Priced per credit: it follows the price per credit of "
                             f"{new['currency']} (Settings) at every checkout.")
        out.notes.append("Credits already bought are not changed.")
        return out
    units, buyers, unpriced = s.execute(
        select(func.coalesce(func.sum(LedgerEntry.quantity), 0),
               func.count(func.distinct(LedgerEntry.customer_id)),
               func.sum(case((LedgerEntry.quantity.is_(None), 1), else_=0)))
        .where(LedgerEntry.feature == obj.feature, LedgerEntry.type == "debit",
               LedgerEntry.created_at >= since)).one()
    units, buyers = int(units or 0), int(buyers or 0)
    out = Impact(kind, customers=buyers,
                 basis=f"{_n(units, obj.unit or 'unit')} by {_n(buyers, 'customer')} in the last "
                       f"{USAGE_DAYS} days",
                 credits_old=units * obj.credits_per_unit, credits_new=units * new["credits_per_unit"],
                 currency=obj.currency, changes=diff)
    per_credit = int(app_settings.get("price_per_credit_minor"))
    if per_credit:
        out.money_old, out.money_new = out.credits_old * per_credit, out.credits_new * per_credit
        out.money_label = "What those credits sell for"
        out.currency = "USD"
    if unpriced:
        out.notes.append(f"{int(unpriced):,} debits named their credits explicitly and would not "
                         "change.")
    return out


@dataclass
class Review:
    """A submitted edit, validated: what would change, and its impact when it touches what
    customers pay or receive (None otherwise)."""

    values: dict
    changes: dict
    impact: Impact | None


def review(kind: str, item_id: int, data: dict) -> Review:
    """Validate an edit without saving it; ValidationFailed names each bad field."""
    obj = get(kind, item_id)
    values = clean(kind, data, existing=obj)
    diff = changes(kind, obj, values)
    touched = any(f in IMPACT_FIELDS[kind] for f in diff)
    return Review(values=values, changes=diff,
                  impact=impact(kind, item_id, values) if touched else None)
