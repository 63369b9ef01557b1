"""Batch debits: up to 1,000 debits in one transaction, one result per item, in order.

Each item carries its own idempotency key, used as the ledger key `api-debit:<key>` (the same key
a single debit with that Idempotency-Key uses), so a retried batch replays the items already
applied and runs the rest. Every involved account is locked once, in id order; each item is
checked before anything is written for it, so a failing item (unknown customer, unpriced
feature, insufficient credits, reused key) gets its error without aborting the others and no
savepoint is needed.
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from models import Customer, FeaturePrice, LedgerEntry, db
from services import ledger
from services.db import atomic
from services.errors import (
    CustomerNotFound,
    IdempotencyConflict,
    InsufficientCredits,
    ServiceError,
    ValidationFailed,
)
from services.ledger import SYSTEM, Actor

MAX_ITEMS = 1000
KEY_PREFIX = "api-debit:"


@dataclass(frozen=True)
class Item:
    customer: str  # external id
    feature: str
    idempotency_key: str
    quantity: int | None = None
    credits: int | None = None
    reference: str | None = None


def ledger_key(idempotency_key: str) -> str:
    return KEY_PREFIX + idempotency_key


def request_hash(*, customer: str, credits: int, feature: str, quantity: int | None,
                 reference: str | None) -> str:
    """The hash ledger.debit() gives the same debit, so single and batch calls replay each other."""
    return ledger.fingerprint("debit", customer=customer, credits=credits, feature=feature,
                              quantity=quantity, reference=reference)


def _ok(i: int, item: Item, entry: LedgerEntry, replayed: bool) -> dict:
    return {"index": i, "idempotency_key": item.idempotency_key, "success": True,
            "entry_id": entry.id, "credits": -entry.amount, "balance": entry.balance_after,
            "replayed": replayed}


def _err(i: int, item: Item, err: ServiceError) -> dict:
    return {"index": i, "idempotency_key": item.idempotency_key, "success": False,
            "code": err.code, "error": err.message, "retryable": err.retryable}


def _prices(features: set[str]) -> dict[str, int]:
    if not features:
        return {}
    rows = db.session.execute(select(FeaturePrice.feature, FeaturePrice.credits_per_unit).where(
        FeaturePrice.feature.in_(features), FeaturePrice.archived_at.is_(None))).all()
    return {f: int(c) for f, c in rows}


def _customers(external_ids: set[str]) -> dict[str, int]:
    if not external_ids:
        return {}
    rows = db.session.execute(select(Customer.external_id, Customer.id).where(
        Customer.external_id.in_(external_ids), Customer.deleted_at.is_(None))).all()
    return dict(rows)


def debit_many(items: list[Item], *, actor: Actor = SYSTEM) -> list[dict]:
    """Apply the debits in order in one transaction; one result dict per item."""
    if len(items) > MAX_ITEMS:
        raise ValidationFailed(f"At most {MAX_ITEMS} debits per batch.", details={"debits": "too many"})
    try:
        return _run(items, actor)
    except IntegrityError:
        # A key of this batch was taken concurrently by a call outside these accounts' locks;
        # run again: that item now replays or reports the conflict.
        return _run(items, actor)


def _run(items: list[Item], actor: Actor) -> list[dict]:
    prices = _prices({it.feature for it in items if it.credits is None})
    ids = _customers({it.customer for it in items})
    with atomic() as s:
        accounts = ledger.lock_accounts(s, ids.values())
        keys = [ledger_key(it.idempotency_key) for it in items]
        done: dict[str, LedgerEntry] = {}
        for chunk in range(0, len(keys), 500):  # found after the locks, so nothing slips between
            done.update((e.idempotency_key, e) for e in s.scalars(
                select(LedgerEntry).where(LedgerEntry.idempotency_key.in_(keys[chunk:chunk + 500]))))
        results = []
        for i, item in enumerate(items):
            try:
                results.append(_one(s, i, item, prices, ids, accounts, done, actor))
            except ServiceError as err:
                results.append(_err(i, item, err))
        return results


def _one(s, i: int, item: Item, prices: dict, ids: dict, accounts: dict, done: dict,
         actor: Actor) -> dict:
    if item.credits is not None:
        credits = item.credits
    elif item.feature in prices:
        credits = prices[item.feature] * (item.quantity or 1)
    else:
        raise ValidationFailed(f"Feature {item.feature!r} has no price; send credits explicitly.",
                               details={"feature": "no price for this feature"})
    h = request_hash(customer=item.customer, credits=credits, feature=item.feature,
                     quantity=item.quantity, reference=item.reference)
    key = ledger_key(item.idempotency_key)
    if (entry := done.get(key)) is not None:
        if entry.request_hash != h:
            raise IdempotencyConflict(f"Idempotency key {item.idempotency_key!r} was already used "
                                      "for a different debit.")
        return _ok(i, item, entry, replayed=True)
    cid = ids.get(item.customer)
    account = accounts.get(cid) if cid is not None else None
    if account is None:
        raise CustomerNotFound(f"Customer {item.customer} not found.")
    if account.balance < credits:  # checked before writing: nothing to undo
        raise InsufficientCredits(f"Insufficient credits: balance {account.balance}, required {credits}.",
                                  details={"balance": account.balance, "required": credits})
    # post_debit may still refuse after expiring stale buckets; those expiries are complete
    # movements of their own, so the transaction stays consistent either way.
    entry = ledger.post_debit(s, account, credits=credits, feature=item.feature, key=key,
                              request_hash=h, actor=actor, quantity=item.quantity,
                              reference=item.reference)
    done[key] = entry
    return _ok(i, item, entry, replayed=False)


__all__ = ["Item", "debit_many", "ledger_key", "request_hash", "MAX_ITEMS", "KEY_PREFIX"]
