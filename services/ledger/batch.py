"""Batch debits: up to 1,000 debits in one transaction, one result per item, in order.

Each item carries its own idempotency key, used as the ledger key `api-debit:<scope><key>` (the
same key a single debit with that Idempotency-Key uses; the scope names the calling API key), so a
retried batch replays the items already applied and runs the rest. Every involved account is
locked once, in id order; each item is checked before anything is written for it, so a failing
item (unknown customer, unpriced feature, insufficient credits, reused key, or refused by the
customer's rate limit before the batch runs) gets its error without aborting the others and no
savepoint is needed.

The movements are computed in memory under those locks (the ledger's own draw order, expiry
and balance rules) and written set-based, in a handful of statements whatever the batch size:
COPY of the entries (ids reserved in posting order) and allocations, one UPDATE of the drawn
buckets, one of the balances. Same rows as ledger.post_debit would write one by one.
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import BigInteger, DateTime, String, bindparam, func, select, text, update
from sqlalchemy.exc import IntegrityError

from models import Account, Allocation, CreditGrant, Customer, FeaturePrice, LedgerEntry, db, utcnow
from services.core import context
from services.core.db import among, atomic, in_atomic
from services.core.errors import (
    CustomerNotFound,
    IdempotencyConflict,
    InsufficientCredits,
    ServiceError,
    ValidationFailed,
)
from services.ledger import bulk as bulkledger
from services.ledger import crossings, rules
from services.ledger.rules import SYSTEM, Actor

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
    scope: str = ""  # the caller's key scope ("k<api key id>:"): keys of two API keys never meet
    refused: ServiceError | None = None  # decided before the batch runs (the customer's rate limit)


def ledger_key(idempotency_key: str) -> str:
    return KEY_PREFIX + idempotency_key


def request_hash(*, customer: str, credits: int, feature: str, quantity: int | None,
                 reference: str | None) -> str:
    """The hash ledger.debit() gives the same debit, so single and batch calls replay each other."""
    return rules.fingerprint("debit", customer=customer, credits=credits, feature=feature,
                              quantity=quantity, reference=reference)


def _ok(i: int, item: Item, entry: dict, replayed: bool) -> dict:
    out = {"index": i, "idempotency_key": item.idempotency_key, "success": True,
           "entry_id": entry.get("id"), "credits": -entry["amount"], "balance": entry["balance_after"],
           "replayed": replayed}
    if out["entry_id"] is None:
        out["_entry"] = entry
    return out


def _err(i: int, item: Item, err: ServiceError) -> dict:
    return {"index": i, "idempotency_key": item.idempotency_key, "success": False,
            "code": err.code, "error": err.message, "retryable": err.retryable}


def _prices(features: set[str]) -> dict[str, int]:
    if not features:
        return {}
    rows = db.session.execute(select(FeaturePrice.feature, FeaturePrice.credits_per_unit).where(
        FeaturePrice.feature.in_(features), FeaturePrice.archived_at.is_(None))).all()
    return {f: int(c) for f, c in rows}



def _lock(s, external_ids: set[str]) -> tuple[dict[str, int], dict[int, dict]]:
    """Find the live customers and lock their accounts in account-id order (deadlock-free), in
    one statement: ({external_id: customer_id}, {customer_id: account row})."""
    if not external_ids:
        return {}, {}
    a, c = Account.__table__, Customer.__table__
    rows = s.execute(select(a.c.id, a.c.customer_id, a.c.balance, a.c.version, c.c.external_id,
                            *crossings.columns(a.c.customer_id))
                     .join(c, c.c.id == a.c.customer_id)
                     .where(among(s, c.c.external_id, external_ids, String), c.c.deleted_at.is_(None))
                     .order_by(a.c.id).with_for_update(of=a)).all()
    ids = {r.external_id: r.customer_id for r in rows}
    return ids, {r.customer_id: {"id": r.id, "customer_id": r.customer_id, "balance": r.balance,
                                 "version": r.version, "watch": crossings.watch_of(*r[5:])}
                 for r in rows}


def debit_many(items: list[Item], *, actor: Actor = SYSTEM) -> list[dict]:
    """Apply the debits in order in one transaction; one result dict per item."""
    if len(items) > MAX_ITEMS:
        raise ValidationFailed(f"At most {MAX_ITEMS} debits per batch.", details={"debits": "too many"})
    try:
        return _run(items, actor)
    except IntegrityError:
        # A key of this batch was taken concurrently by a call outside these accounts' locks;
        # run again: that item now replays or reports the conflict. Inside a caller's
        # transaction the caller rolls back and runs again.
        if in_atomic():
            raise
        return _run(items, actor)


class _Bucket:
    """A live grant of a locked account, drawn in memory and written once at the end."""

    __slots__ = ("id", "source", "expires_at", "remaining", "expired_at", "touched")

    def __init__(self, row):
        self.id, self.source, self.expires_at, self.remaining = row
        self.expired_at, self.touched = None, False


def _run(items: list[Item], actor: Actor) -> list[dict]:
    prices = _prices({it.feature for it in items if it.credits is None})
    with atomic() as s:
        ids, accounts = _lock(s, {it.customer for it in items if it.refused is None})
        post = _Posting(s, actor, accounts)
        keys = {ledger_key(it.scope + it.idempotency_key) for it in items if it.refused is None}
        # found after the locks, so nothing slips between
        for row in s.execute(select(*_DONE_COLS).where(among(s, ENTRIES.c.idempotency_key, keys,
                                                              String))):
            post.done[row.idempotency_key] = dict(row._mapping)
        results = []
        for i, item in enumerate(items):
            if item.refused is not None:
                results.append(_err(i, item, item.refused))
                continue
            try:
                results.append(_one(i, item, prices, ids, post))
            except ServiceError as err:
                results.append(_err(i, item, err))
        post.write()
        for r in results:  # entry ids are reserved when the batch is written
            if "_entry" in r:
                r["entry_id"] = r.pop("_entry")["id"]
        return results


ENTRIES = LedgerEntry.__table__
_DONE_COLS = (ENTRIES.c.id, ENTRIES.c.idempotency_key, ENTRIES.c.request_hash, ENTRIES.c.amount,
              ENTRIES.c.balance_after)


class _Posting:
    """The batch's movements, computed under the account locks and written set-based:
    reserved entry ids, COPY of entries and allocations, one UPDATE for the buckets and one for
    the balances (services.ledger.bulk), whatever the number of items."""

    def __init__(self, s, actor: Actor, accounts: dict[int, dict]):
        self.s, self.actor, self.accounts = s, actor, accounts
        self.now = utcnow()
        self.request_id = context.request_id()
        self.grace, self.paid_never = rules.expiry_rules()
        self.done: dict[str, dict] = {}
        self.entries: list[dict] = []
        self.allocs: list[dict] = []
        self.touched: list[_Bucket] = []
        self.buckets: dict[int, list[_Bucket]] = {a["id"]: [] for a in accounts.values()}
        if accounts:
            g = CreditGrant.__table__
            for row in s.execute(select(g.c.account_id, g.c.id, g.c.source, g.c.expires_at, g.c.remaining)
                                 .where(among(s, g.c.account_id, self.buckets, BigInteger),
                                        g.c.remaining > 0)
                                 .order_by(g.c.account_id, g.c.expires_at.is_(None), g.c.expires_at,
                                           g.c.id)):
                self.buckets[row[0]].append(_Bucket(row[1:]))

    def _entry(self, acct: dict, *, type: str, amount: int, **fields) -> dict:
        e = rules.entry_row(acct, type=type, amount=amount, actor=self.actor, at=self.now,
                            request_id=self.request_id, **fields)
        self.entries.append(e)
        return e

    def _draw(self, e: dict, bucket: _Bucket, credits: int) -> None:
        bucket.remaining -= credits
        if not bucket.touched:
            bucket.touched = True
            self.touched.append(bucket)
        self.allocs.append({"_entry": e, "grant_id": bucket.id, "credits": -credits})

    def expire_stale(self, acct: dict) -> None:
        """What ledger.post_debit does first: expire the account's buckets past their expiry."""
        if acct.get("expiry_checked"):
            return
        acct["expiry_checked"] = True
        live = []
        for b in self.buckets[acct["id"]]:
            if rules.is_expired(b, self.now, self.grace, self.paid_never):
                e = self._entry(acct, type="expiry", amount=-b.remaining, grant_id=b.id,
                                reason="credits expired", idempotency_key=f"expiry:{b.id}",
                                request_hash=rules.fingerprint("expiry", grant=b.id))
                self._draw(e, b, b.remaining)
                b.expired_at = self.now
            else:
                live.append(b)
        self.buckets[acct["id"]] = live

    def debit(self, acct: dict, *, credits: int, key: str, request_hash: str, feature: str,
              quantity: int | None, reference: str | None) -> dict:
        e = self._entry(acct, type="debit", amount=-credits, feature=feature, quantity=quantity,
                        reference=reference, idempotency_key=key, request_hash=request_hash)
        for bucket, take in rules.plan_draw(self.buckets[acct["id"]], credits):
            self._draw(e, bucket, take)
        self.buckets[acct["id"]] = [b for b in self.buckets[acct["id"]] if b.remaining > 0]
        self.done[key] = e
        return e

    def write(self) -> None:
        s = self.s
        for e, eid in zip(self.entries, bulkledger.reserve_ids(s, ENTRIES, len(self.entries)),
                          strict=True):
            e["id"] = eid
        for a in self.allocs:
            a["entry_id"] = a.pop("_entry")["id"]
        try:
            bulkledger._insert_many(s, ENTRIES, self.entries)
            bulkledger._insert_many(s, Allocation.__table__, self.allocs)
        except Exception as err:
            if getattr(err, "sqlstate", None) == "23505":  # a key taken meanwhile (COPY is raw)
                raise IntegrityError("COPY ledger_entries", None, err) from err
            raise
        _set_buckets(s, self.touched)
        accounts = [a for a in self.accounts.values() if a.pop("touched", False)]
        if accounts:
            bulkledger._set_balances(s, accounts, self.now)
        bulkledger.check_crossings(s, self.entries, self.accounts, at=self.now)


def _set_buckets(s, buckets: list[_Bucket]) -> None:
    """New remaining (and expired_at) of every drawn bucket: one statement on PostgreSQL."""
    if not buckets:
        return
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text(
            "UPDATE credit_grants AS g SET remaining = v.remaining, "
            "expired_at = COALESCE(v.expired_at, g.expired_at) "
            "FROM unnest(CAST(:ids AS bigint[]), CAST(:rem AS bigint[]), CAST(:exp AS timestamp[])) "
            "AS v(id, remaining, expired_at) WHERE g.id = v.id"),
            {"ids": [b.id for b in buckets], "rem": [b.remaining for b in buckets],
             "exp": [b.expired_at for b in buckets]})
        return
    g = CreditGrant.__table__
    s.execute(update(g).where(g.c.id == bindparam("gid")).values(
        remaining=bindparam("rem"), expired_at=func.coalesce(bindparam("exp", type_=DateTime),
                                                             g.c.expired_at)),
        [{"gid": b.id, "rem": b.remaining, "exp": b.expired_at} for b in buckets])


def _one(i: int, item: Item, prices: dict, ids: dict, post: _Posting) -> dict:
    if item.credits is not None:
        credits = item.credits
    elif item.feature in prices:
        credits = prices[item.feature] * (item.quantity or 1)
    else:
        raise ValidationFailed(f"Feature {item.feature!r} has no price; send credits explicitly.",
                               details={"feature": "no price for this feature"})
    h = request_hash(customer=item.customer, credits=credits, feature=item.feature,
                     quantity=item.quantity, reference=item.reference)
    key = ledger_key(item.scope + item.idempotency_key)
    if (entry := post.done.get(key)) is not None:
        if entry["request_hash"] != h:
            raise IdempotencyConflict(f"Idempotency key {item.idempotency_key!r} was already used "
                                      "for a different debit.")
        return _ok(i, item, entry, replayed=True)
    cid = ids.get(item.customer)
    account = post.accounts.get(cid) if cid is not None else None
    if account is None:
        raise CustomerNotFound(f"Customer {item.customer} not found.")
    # Like ledger.post_debit: stale buckets expire first (complete movements of their own, kept
    # even if this item is then refused, so the balance shown after it is what can be spent).
    post.expire_stale(account)
    _check(account, credits)
    entry = post.debit(account, credits=credits, key=key, request_hash=h, feature=item.feature,
                       quantity=item.quantity, reference=item.reference)
    return _ok(i, item, entry, replayed=False)


def _check(account: dict, credits: int) -> None:
    if account["balance"] < credits:
        raise InsufficientCredits(f"Insufficient credits: balance {account['balance']}, required {credits}.",
                                  details={"balance": account["balance"], "required": credits})


__all__ = ["Item", "debit_many", "ledger_key", "request_hash", "MAX_ITEMS", "KEY_PREFIX"]
