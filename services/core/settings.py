"""Tunable business settings: a registry of names, types and defaults, and their change history."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from sqlalchemy import func, select

from models import CreditPackage, Setting, SettingChange, db, utcnow
from services.core import audit
from services.core.db import atomic
from services.core.errors import ValidationFailed


@dataclass(frozen=True)
class Spec:
    key: str
    label: str
    kind: type  # int or bool
    default: int | bool
    help: str
    minimum: int = 0
    unit: str = ""


SPECS: dict[str, Spec] = {s.key: s for s in [
    Spec("price_per_credit_minor", "Price per credit", int, 1,
         "What one credit sells for, in minor units (cents) of the default currency (USD); "
         "USD packages priced per credit follow it.", 0, "minor units"),
    Spec("price_per_credit_inr_minor", "Price per credit (INR)", int, 0,
         "What one credit sells for in paise; INR packages priced per credit follow it "
         "(0 = none: INR packages are sold at fixed prices only).", 0, "paise"),
    Spec("refund_window_days", "Refund window", int, 14,
         "Days after a purchase during which its unused credits can be refunded.", 0, "days"),
    Spec("free_monthly_credits", "Free monthly credits", int, 50,
         "Credits the monthly distribution grants to each free customer.", 0, "credits"),
    Spec("default_expiry_days", "Default expiry", int, 365,
         "Days until granted credits expire when the grant names no expiry (0 = never).", 0, "days"),
    Spec("support_adjustment_limit", "Support adjustment limit", int, 500,
         "Largest adjustment support may make alone; larger ones wait for an admin.", 0, "credits"),
    Spec("low_balance_threshold", "Low-balance threshold", int, 100,
         "A balance below this fires credits.low_balance and is flagged as low (plans and "
         "customers may override it; 0 = off).", 0, "credits"),
    Spec("expiry_notice_days", "Expiry notice", int, 7,
         "Days before a grant expires that grant.expiring is sent (0 = off).", 0, "days"),
    Spec("paid_credits_never_expire", "Paid credits never expire", bool, True,
         "Purchased and subscription credits are exempt from expiry.", 0, ""),
    Spec("expiry_grace_hours", "Expiry grace period", int, 0,
         "Hours after expires_at during which credits can still be spent.", 0, "hours"),
]}

# The price per credit of each currency that has one (services/catalog/packages.py prices
# per-credit packages with it); a currency not listed here has none.
PRICE_PER_CREDIT = {"USD": "price_per_credit_minor", "INR": "price_per_credit_inr_minor"}

_cache: dict[str, tuple[float, int | bool]] = {}
_lock = threading.Lock()
_TTL = 30.0


def _parse(spec: Spec, raw: str) -> int | bool:
    if spec.kind is bool:
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    return int(raw)


def get(key: str, *, fresh: bool = False) -> int | bool:
    """The current value (cached for 30 s in this process; a change here clears the cache;
    `fresh` reads the database, for money computed from it at checkout)."""
    spec = SPECS[key]
    now = time.monotonic()
    hit = _cache.get(key)
    if hit and now - hit[0] < _TTL and not fresh:
        return hit[1]
    row = db.session.get(Setting, key)
    value = _parse(spec, row.value) if row else spec.default
    with _lock:
        _cache[key] = (now, value)
    return value


def all_values() -> dict[str, int | bool]:
    rows = {r.key: r.value for r in db.session.scalars(select(Setting))}
    return {k: (_parse(s, rows[k]) if k in rows else s.default) for k, s in SPECS.items()}


def clear_cache() -> None:
    with _lock:
        _cache.clear()


def coerce(key: str, raw: str | int | bool) -> int | bool:
    """Validate a submitted value for `key`; raises ValidationFailed with a readable message."""
    spec = SPECS.get(key)
    if spec is None:
        raise ValidationFailed(f"Unknown setting {key!r}.")
    if spec.kind is bool:
        return raw if isinstance(raw, bool) else str(raw).strip().lower() in {"1", "true", "yes", "on"}
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise ValidationFailed(f"{spec.label} must be a whole number.") from None
    if value < spec.minimum:
        raise ValidationFailed(f"{spec.label} must be at least {spec.minimum}.")
    if value > 10**12:
        raise ValidationFailed(f"{spec.label} is too large.")
    return value


def update(*, key: str, value: str | int | bool, staff=None, reason: str | None = None,
           ip: str | None = None) -> SettingChange | None:
    """Change one setting, recording who changed it from what to what. None when unchanged."""
    new = coerce(key, value)
    with atomic() as s:
        row = s.get(Setting, key, with_for_update=True)
        old = _parse(SPECS[key], row.value) if row else SPECS[key].default
        if old == new:
            return None
        _check_price_per_credit(s, key, new)
        new_raw = str(new).lower() if isinstance(new, bool) else str(new)
        old_raw = None if row is None else row.value
        if row is None:
            row = Setting(key=key, value=new_raw)
            s.add(row)
        row.value, row.updated_at = new_raw, utcnow()
        row.updated_by_id = getattr(staff, "id", None)
        default_raw = str(old).lower() if isinstance(old, bool) else str(old)
        change = SettingChange(key=key, old_value=old_raw if old_raw is not None else default_raw,
                               new_value=new_raw, staff_id=getattr(staff, "id", None), reason=reason)
        s.add(change)
        audit.record(action="settings.update", staff=staff, target_type="setting", target_id=key,
                     before={key: old}, after={key: new}, reason=reason, ip=ip)
    clear_cache()
    return change


def _check_price_per_credit(s, key: str, new: int | bool) -> None:
    """A price per credit cannot go to 0 while active packages are priced by it."""
    currency = next((c for c, k in PRICE_PER_CREDIT.items() if k == key), None)
    if currency is None or new:
        return
    names = list(s.scalars(select(CreditPackage.name).where(
        CreditPackage.pricing == "per_credit", CreditPackage.currency == currency,
        CreditPackage.archived_at.is_(None)).order_by(CreditPackage.id).limit(4)))
    if names:
        raise ValidationFailed(
            f"{SPECS[key].label} cannot be 0: {', '.join(names[:3])}"
            f"{' and others' if len(names) > 3 else ''} {'is' if len(names) == 1 else 'are'} "
            f"priced per credit in {currency}. Give them a fixed price or archive them first.")


def history(*, key: str | None = None, before_id: int | None = None,
            limit: int = 25) -> tuple[list[SettingChange], int | None]:
    """Changes newest first (optionally of one key), keyset paged: (rows, next before_id)."""
    stmt = select(SettingChange).order_by(SettingChange.id.desc())
    if key:
        stmt = stmt.where(SettingChange.key == key)
    if before_id:
        stmt = stmt.where(SettingChange.id < before_id)
    rows = list(db.session.scalars(stmt.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if more else None)


def last_changes() -> dict[str, SettingChange]:
    """The latest change of each setting that was ever changed, in one query."""
    latest = select(func.max(SettingChange.id)).group_by(SettingChange.key)
    rows = db.session.scalars(select(SettingChange).where(SettingChange.id.in_(latest)))
    return {r.key: r for r in rows}
