"""The credit ledger: every movement of credits goes through here.

Rules (../shared/DESIGN.md, "Ledger rules"):
- credits arrive as grants (buckets); a debit draws soonest-expiring first, then oldest, and
  records an allocation per bucket so a refund returns credits to the buckets they came from;
- every movement is one immutable LedgerEntry with balance_before/after;
- the account row is locked (FOR UPDATE; BEGIN IMMEDIATE on SQLite) before its balance is read;
- an idempotency key maps to at most one entry (UNIQUE), and a retry with the same key and the
  same request gets the first entry back; another request under that key is a conflict.

Public functions open their own transaction with atomic(); called inside another service's
atomic() block they join it. The `post_*` and `lock_*` helpers run inside a caller's
transaction (batch debits, tasks, purchases) and only flush.
"""
from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models import Account, Allocation, CreditGrant, Customer, LedgerEntry, db, utcnow
from services.core import context
from services.core import settings as app_settings
from services.core.db import atomic, in_atomic
from services.core.errors import (
    Conflict,
    CustomerNotFound,
    InsufficientCredits,
    NotFound,
    ValidationFailed,
)
from services.events import outbox
from services.events.signing import iso as iso_utc
from services.ledger import crossings
from services.ledger.hotpath import fast_debit
from services.ledger.rules import (
    POSTABLE_SOURCES,
    SYSTEM,
    Actor,
    check_replay,
    expired_clause,
    expiry_rules,
    fingerprint,
    is_expired,
    plan_draw,
    positive,
)

# --- validation and idempotency -------------------------------------------------------------

def find_by_key(s: Session, key: str) -> LedgerEntry | None:
    return s.scalar(select(LedgerEntry).where(LedgerEntry.idempotency_key == key))


def _idempotent(key: str | None, request_hash: str, body, fast=None):
    """Run body(session) in one transaction, keyed: a retry returns the entry the key made.

    `fast(session)`, when given, is tried first: it returns the entry, or None (having written
    nothing) to leave the decision to the key check and `body`.
    """
    try:
        with atomic() as s:
            if fast is not None and (done := fast(s)) is not None:
                return done
            if key and (done := find_by_key(s, key)):
                return check_replay(done, request_hash)
            return body(s)
    except InsufficientCredits as err:
        # The refused debit rolled back the expiry it found due; keep that expiry, so the
        # balance shown afterwards is what can really be spent.
        if getattr(err, "stale_customer_id", None) and not in_atomic():
            with atomic() as s:
                expire_due(s, lock_account(s, customer_id=err.stale_customer_id), utcnow())
        raise
    except IntegrityError:
        # Two first attempts raced on the UNIQUE key (or on another customer's account): the
        # loser's transaction is rolled back here; answer as a retry would be answered. Inside
        # a caller's transaction it is the caller's to roll back (and retry).
        if in_atomic():
            raise
        if key and (done := find_by_key(db.session, key)):
            return check_replay(done, request_hash)
        raise


# --- locking -----------------------------------------------------------------------------------

def lock_account(s: Session, *, customer_id: int | None = None,
                 external_id: str | None = None) -> Account:
    """The customer's account row, locked for this transaction. Deleted customers are not found."""
    # The crossing rule's Watch comes with the lock (services.ledger.crossings).
    q = select(Account, *crossings.columns(Account.__table__.c.customer_id)).join(
        Customer, Customer.id == Account.customer_id).where(Customer.deleted_at.is_(None))
    if customer_id is not None:
        q = q.where(Account.customer_id == customer_id)
    elif external_id is not None:
        q = q.where(Customer.external_id == external_id)
    else:
        raise ValidationFailed("customer is required")
    row = s.execute(q.with_for_update(of=Account).execution_options(populate_existing=True)).first()
    if row is None:
        raise CustomerNotFound(f"Customer {external_id or customer_id} not found.")
    account = row[0]
    crossings.remember(account, crossings.watch_of(*row[1:]))
    return account


def lock_accounts(s: Session, customer_ids: Iterable[int]) -> dict[int, Account]:
    """Lock several accounts in account-id order (the deadlock-free order); keyed by customer."""
    ids = sorted(set(customer_ids))
    if not ids:
        return {}
    rows = s.execute(
        select(Account, *crossings.columns(Account.__table__.c.customer_id))
        .where(Account.customer_id.in_(ids)).order_by(Account.id)
        .with_for_update(of=Account).execution_options(populate_existing=True)
    ).all()
    for row in rows:
        crossings.remember(row[0], crossings.watch_of(*row[1:]))
    return {row[0].customer_id: row[0] for row in rows}


# --- expiry rules (shared with the expiry job) ----------------------------------------------

# --- posting helpers (inside a caller's transaction) ----------------------------------------

def _post(s: Session, account: Account, *, type: str, amount: int, actor: Actor,
          **fields) -> LedgerEntry:
    """Append one entry and move the cached balance, under the caller's account lock."""
    before = account.balance
    account.balance = before + amount
    account.version = account.version + 1
    account.updated_at = utcnow()
    entry = LedgerEntry(
        account_id=account.id, customer_id=account.customer_id, type=type, amount=amount,
        balance_before=before, balance_after=before + amount, actor_type=actor.type,
        actor_id=actor.id, request_id=fields.pop("request_id", None) or context.request_id(),
        **fields,
    )
    s.add(entry)
    if amount < 0:
        crossings.check(s, customer_id=account.customer_id, watch=crossings.remembered(account),
                        before=before, after=before + amount, entry_type=type,
                        entry_id=lambda: _flushed_id(s, entry))
    return entry


def _flushed_id(s: Session, entry: LedgerEntry) -> int:
    if entry.id is None:
        s.flush()
    return entry.id


def _live_grants(s: Session, account: Account) -> list[CreditGrant]:
    """Buckets with credits left, in draw order: soonest-expiring first, then oldest."""
    return list(s.scalars(
        select(CreditGrant)
        .where(CreditGrant.account_id == account.id, CreditGrant.remaining > 0)
        .order_by(CreditGrant.expires_at.is_(None), CreditGrant.expires_at, CreditGrant.id)
    ))


def _expire(s: Session, account: Account, g: CreditGrant, now: datetime, actor: Actor,
            job_run_id: int | None = None) -> LedgerEntry:
    amount = g.remaining
    entry = _post(s, account, type="expiry", amount=-amount, actor=actor, grant_id=g.id,
                  reason="credits expired", idempotency_key=f"expiry:{g.id}",
                  request_hash=fingerprint("expiry", grant=g.id), job_run_id=job_run_id)
    g.remaining, g.expired_at = 0, now
    s.flush()
    s.add(Allocation(entry_id=entry.id, grant_id=g.id, credits=-amount))
    return entry


def _draw(s: Session, account: Account, credits: int, now: datetime, actor: Actor,
          allow_negative: bool = False) -> list[tuple]:
    """Plan a draw of `credits`, expiring stale buckets first. Raises when short (unless allowed)."""
    grace, paid_never = expiry_rules()
    grants, stale = [], False
    for g in _live_grants(s, account):
        if is_expired(g, now, grace, paid_never):
            _expire(s, account, g, now, actor)
            stale = True
        else:
            grants.append(g)
    if account.balance < credits and not allow_negative:
        err = InsufficientCredits(
            f"Insufficient credits: balance {account.balance}, required {credits}.",
            details={"balance": account.balance, "required": credits})
        err.stale_customer_id = account.customer_id if stale else None
        raise err
    return plan_draw(grants, credits)


def _apply_draw(s: Session, entry: LedgerEntry, plan: list[tuple]) -> None:
    s.flush()  # entry.id
    for g, take in plan:
        g.remaining = g.remaining - take
        s.add(Allocation(entry_id=entry.id, grant_id=g.id, credits=-take))


def post_debit(s: Session, account: Account, *, credits: int, feature: str | None,
               key: str | None, request_hash: str, actor: Actor = SYSTEM,
               quantity: int | None = None, reference: str | None = None,
               reason: str | None = None, task_id: int | None = None,
               meta: dict | None = None, type: str = "debit") -> LedgerEntry:
    """Debit a locked account inside the caller's transaction; raises before writing if short."""
    now = utcnow()
    plan = _draw(s, account, credits, now, actor)
    entry = _post(s, account, type=type, amount=-credits, actor=actor, feature=feature,
                  quantity=quantity, reference=reference, reason=reason, task_id=task_id,
                  idempotency_key=key, request_hash=request_hash, meta=meta)
    _apply_draw(s, entry, plan)
    s.flush()
    return entry


def post_grant(s: Session, account: Account, *, credits: int, source: str, actor: Actor = SYSTEM,
               key: str | None = None, request_hash: str | None = None,
               expires_at: datetime | None = None, reason: str | None = None,
               cost_minor: int = 0, currency: str | None = None, payment_id: int | None = None,
               plan_id: int | None = None, period: str | None = None,
               job_run_id: int | None = None, reference: str | None = None,
               entry_type: str = "grant", meta: dict | None = None) -> LedgerEntry:
    """Create a bucket and its grant entry inside the caller's transaction."""
    g = CreditGrant(account_id=account.id, customer_id=account.customer_id, source=source,
                    amount=credits, remaining=credits, expires_at=expires_at,
                    cost_minor=cost_minor, currency=currency, payment_id=payment_id,
                    plan_id=plan_id, period=period, job_run_id=job_run_id)
    s.add(g)
    s.flush()
    entry = _post(s, account, type=entry_type, amount=credits, actor=actor, grant_id=g.id,
                  reason=reason, reference=reference, payment_id=payment_id,
                  job_run_id=job_run_id, idempotency_key=key, meta=meta,
                  request_hash=request_hash or fingerprint("grant", key=key))
    s.flush()
    s.add(Allocation(entry_id=entry.id, grant_id=g.id, credits=credits))
    outbox.emit("grant.created", grant_event(g.id, credits, source, expires_at),
                customer_id=account.customer_id, session=s)
    return entry


def grant_event(grant_id: int, credits: int, source: str, expires_at: datetime | None) -> dict:
    """The `data` of grant.created (docs/webhooks.md); external_id is added by the outbox."""
    return {"grant_id": grant_id, "credits": credits, "source": source,
            "expires_at": iso_utc(expires_at)}


def _returnable(s: Session, debit: LedgerEntry) -> list[tuple[int, int]]:
    """(grant_id, credits still returnable) per grant a debit drew from, latest-drawn first."""
    drawn = {a.grant_id: -a.credits for a in debit.allocations if a.credits < 0}
    order = [a.grant_id for a in debit.allocations if a.credits < 0]
    rows = s.execute(
        select(Allocation.grant_id, func.sum(Allocation.credits))
        .join(LedgerEntry, LedgerEntry.id == Allocation.entry_id)
        .where(LedgerEntry.related_entry_id == debit.id,
               LedgerEntry.type.in_(("refund", "reversal")))
        .group_by(Allocation.grant_id)
    ).all()
    returned = {gid: int(total) for gid, total in rows}
    # Credits returned into a fresh bucket (the original had expired) count against the total.
    extra = sum(v for gid, v in returned.items() if gid not in drawn)
    out = []
    for gid in reversed(order):
        left = drawn[gid] - returned.get(gid, 0)
        take = min(left, extra)
        left, extra = left - take, extra - take
        if left > 0:
            out.append((gid, left))
    return out


def post_return(s: Session, account: Account, debit: LedgerEntry, credits: int, *, type: str,
                 actor: Actor, key: str | None, request_hash: str,
                 reason: str | None, task_id: int | None = None) -> LedgerEntry:
    """Give back `credits` of a debit to the buckets it drew from (latest-drawn first)."""
    available = _returnable(s, debit)
    total = sum(c for _, c in available)
    if credits > total:
        raise Conflict(f"Only {total} credits of entry {debit.id} can still be returned.",
                       details={"returnable": total})
    now = utcnow()
    grace, paid_never = expiry_rules()
    plan, left, fresh = [], credits, 0
    for gid, can in available:
        if left == 0:
            break
        give = min(can, left)
        left -= give
        g = s.get(CreditGrant, gid)
        if g.expired_at is not None or is_expired(g, now, grace, paid_never):
            fresh += give  # that bucket has expired: these credits go into a new one
        else:
            plan.append((g, give))
    new_bucket = None
    if fresh:
        days = int(app_settings.get("default_expiry_days"))
        new_bucket = CreditGrant(account_id=account.id, customer_id=account.customer_id,
                                 source="refund", amount=fresh, remaining=fresh,
                                 expires_at=now + timedelta(days=days) if days else None)
        s.add(new_bucket)
        s.flush()
        plan.append((new_bucket, 0))
    entry = _post(s, account, type=type, amount=credits, actor=actor, related_entry_id=debit.id,
                  feature=debit.feature, reference=debit.reference, reason=reason,
                  task_id=task_id or debit.task_id, idempotency_key=key,
                  request_hash=request_hash, grant_id=new_bucket.id if new_bucket else None)
    s.flush()
    for g, give in plan:
        if g is new_bucket:
            s.add(Allocation(entry_id=entry.id, grant_id=g.id, credits=fresh))
        else:
            g.remaining = g.remaining + give
            s.add(Allocation(entry_id=entry.id, grant_id=g.id, credits=give))
    s.flush()
    return entry


# --- public operations ---------------------------------------------------------------------

def grant(*, customer_id: int, credits: int, source: str, actor: Actor = SYSTEM,
          key: str | None = None, expires_at: datetime | None = None, reason: str | None = None,
          cost_minor: int = 0, currency: str | None = None, payment_id: int | None = None,
          plan_id: int | None = None, period: str | None = None, job_run_id: int | None = None,
          reference: str | None = None, meta: dict | None = None) -> LedgerEntry:
    """Add a bucket of credits to a customer."""
    positive(credits)
    if source not in POSTABLE_SOURCES:
        raise ValidationFailed(f"Unknown grant source {source!r}.", details={"source": "unknown"})
    h = fingerprint("grant", customer=customer_id, credits=credits, source=source,
                    expires_at=expires_at, payment=payment_id, period=period)

    def body(s):
        account = lock_account(s, customer_id=customer_id)
        return post_grant(s, account, credits=credits, source=source, actor=actor, key=key,
                          request_hash=h, expires_at=expires_at, reason=reason,
                          cost_minor=cost_minor, currency=currency, payment_id=payment_id,
                          plan_id=plan_id, period=period, job_run_id=job_run_id,
                          reference=reference, meta=meta)

    return _idempotent(key, h, body)


def debit(*, credits: int, feature: str | None, customer_id: int | None = None,
          external_id: str | None = None, key: str | None = None, actor: Actor = SYSTEM,
          quantity: int | None = None, reference: str | None = None, reason: str | None = None,
          task_id: int | None = None, meta: dict | None = None,
          write_at_commit: bool = False) -> LedgerEntry:
    """Spend credits, soonest-expiring buckets first. InsufficientCredits leaves nothing behind.

    write_at_commit: the hot path's entry is written with the COMMIT (services.ledger.hotpath),
    for a caller whose transaction ends soon after (the API debit): an error writing it then
    surfaces from the commit."""
    positive(credits)
    who = customer_id if customer_id is not None else external_id
    h = fingerprint("debit", customer=who, credits=credits, feature=feature, quantity=quantity,
                    reference=reference)

    def body(s):
        account = lock_account(s, customer_id=customer_id, external_id=external_id)
        return post_debit(s, account, credits=credits, feature=feature, key=key,
                          request_hash=h, actor=actor, quantity=quantity, reference=reference,
                          reason=reason, task_id=task_id, meta=meta)

    def fast(s):
        return fast_debit(s, customer_id=customer_id, external_id=external_id, credits=credits,
                          key=key, request_hash=h, actor=actor, feature=feature, quantity=quantity,
                          reference=reference, reason=reason, task_id=task_id, meta=meta,
                          write_at_commit=write_at_commit)

    return _idempotent(key, h, body, fast)


def refund(*, entry_id: int, credits: int | None = None, reason: str, actor: Actor = SYSTEM,
           key: str | None = None, task_id: int | None = None) -> LedgerEntry:
    """Return credits of a debit to the buckets they came from (all that is left by default)."""
    if credits is not None:
        positive(credits)
    h = fingerprint("refund", entry=entry_id, credits=credits)

    def body(s):
        debit_entry = s.get(LedgerEntry, entry_id)
        if debit_entry is None or debit_entry.type not in ("debit", "adjustment") \
                or debit_entry.amount >= 0:
            raise NotFound(f"No debit {entry_id} to refund.")
        account = lock_account(s, customer_id=debit_entry.customer_id)
        amount = credits
        if amount is None:
            amount = sum(c for _, c in _returnable(s, debit_entry))
            if amount == 0:
                raise Conflict(f"Debit {entry_id} has been refunded in full already.")
        return post_return(s, account, debit_entry, amount, type="refund", actor=actor, key=key,
                            request_hash=h, reason=reason, task_id=task_id)

    return _idempotent(key, h, body)


def adjust(*, customer_id: int, credits: int, reason: str, actor: Actor, key: str | None = None,
           allow_negative: bool = False, expires_at: datetime | None = None,
           meta: dict | None = None) -> LedgerEntry:
    """Staff correction: positive adds a bucket, negative draws like a debit.

    Below zero only with allow_negative: the shortfall is held in a 'deficit' bucket so that
    balance = sum of buckets still holds.
    """
    if isinstance(credits, bool) or not isinstance(credits, int) or credits == 0:
        raise ValidationFailed("credits must be a non-zero whole number",
                               details={"credits": "must be non-zero"})
    positive(abs(credits))
    if not reason or not reason.strip():
        raise ValidationFailed("A reason is required.", details={"reason": "required"})
    h = fingerprint("adjust", customer=customer_id, credits=credits, reason=reason,
                    allow_negative=allow_negative)

    def body(s):
        account = lock_account(s, customer_id=customer_id)
        if credits > 0:
            return post_grant(s, account, credits=credits, source="adjustment", actor=actor,
                              key=key, request_hash=h, expires_at=expires_at, reason=reason,
                              entry_type="adjustment", meta=meta)
        need = -credits
        plan = _draw(s, account, need, utcnow(), actor, allow_negative=allow_negative)
        entry = _post(s, account, type="adjustment", amount=credits, actor=actor, reason=reason,
                      idempotency_key=key, request_hash=h, meta=meta)
        _apply_draw(s, entry, plan)
        short = need - sum(take for _, take in plan)
        if short:
            _overdraw(s, account, entry, short)
        s.flush()
        return entry

    return _idempotent(key, h, body)


def _overdraw(s: Session, account: Account, entry: LedgerEntry, short: int) -> None:
    deficit = s.scalar(select(CreditGrant).where(CreditGrant.account_id == account.id,
                                                 CreditGrant.source == "deficit"))
    if deficit is None:
        deficit = CreditGrant(account_id=account.id, customer_id=account.customer_id,
                              source="deficit", amount=0, remaining=0)
        s.add(deficit)
        s.flush()
    deficit.remaining = deficit.remaining - short
    s.add(Allocation(entry_id=entry.id, grant_id=deficit.id, credits=-short))


def expire_grant(*, grant_id: int, actor: Actor = SYSTEM, job_run_id: int | None = None,
                 now: datetime | None = None) -> LedgerEntry | None:
    """Expire what is left of one bucket (if it is due); None when there is nothing to do."""
    now = now or utcnow()
    with atomic() as s:
        g = s.get(CreditGrant, grant_id)
        if g is None:
            raise NotFound(f"No grant {grant_id}.")
        account = lock_account(s, customer_id=g.customer_id)
        s.refresh(g)
        grace, paid_never = expiry_rules()
        if g.expired_at is not None or not is_expired(g, now, grace, paid_never):
            return None
        return _expire(s, account, g, now, actor, job_run_id)


def expire_due(s: Session, account: Account, now: datetime, actor: Actor = SYSTEM,
               job_run_id: int | None = None) -> list[LedgerEntry]:
    """Expire every due bucket of a locked account inside the caller's transaction."""
    due = s.scalars(select(CreditGrant).where(CreditGrant.account_id == account.id,
                                              expired_clause(now)).order_by(CreditGrant.id))
    return [_expire(s, account, g, now, actor, job_run_id) for g in list(due)]


def clawback(*, grant_id: int, credits: int, reason: str, actor: Actor = SYSTEM,
             key: str | None = None, payment_id: int | None = None) -> LedgerEntry:
    """Take unused credits out of one bucket (a purchase being refunded)."""
    positive(credits)
    h = fingerprint("clawback", grant=grant_id, credits=credits)

    def body(s):
        return post_clawback(s, grant_id=grant_id, credits=credits, reason=reason, actor=actor,
                             key=key, request_hash=h, payment_id=payment_id)

    return _idempotent(key, h, body)


def post_clawback(s: Session, *, grant_id: int, credits: int, reason: str, actor: Actor,
                  key: str | None, request_hash: str,
                  payment_id: int | None = None) -> LedgerEntry:
    g = s.get(CreditGrant, grant_id)
    if g is None:
        raise NotFound(f"No grant {grant_id}.")
    account = lock_account(s, customer_id=g.customer_id)
    s.refresh(g)
    if credits > g.remaining:
        raise Conflict(f"Grant {grant_id} has only {g.remaining} unused credits.",
                       details={"remaining": g.remaining})
    entry = _post(s, account, type="clawback", amount=-credits, actor=actor, grant_id=g.id,
                  reason=reason, payment_id=payment_id or g.payment_id, idempotency_key=key,
                  request_hash=request_hash)
    g.remaining = g.remaining - credits
    s.flush()
    s.add(Allocation(entry_id=entry.id, grant_id=g.id, credits=-credits))
    s.flush()
    return entry


def reverse(*, entry_id: int, reason: str, actor: Actor) -> LedgerEntry:
    """Undo one entry with a new one (at most once): a debit's credits come back; a grant's go."""
    if not reason or not reason.strip():
        raise ValidationFailed("A reason is required.", details={"reason": "required"})
    key = f"reversal:{entry_id}"
    h = fingerprint("reverse", entry=entry_id)

    def body(s):
        e = s.get(LedgerEntry, entry_id)
        if e is None:
            raise NotFound(f"No ledger entry {entry_id}.")
        account = lock_account(s, customer_id=e.customer_id)
        if e.type in ("debit", "adjustment") and e.amount < 0:
            left = sum(c for _, c in _returnable(s, e))
            if left == 0:
                raise Conflict(f"Entry {entry_id} has been returned in full already.")
            return post_return(s, account, e, left, type="reversal", actor=actor, key=key,
                                request_hash=h, reason=reason)
        if e.type in ("grant", "adjustment") and e.amount > 0 and e.grant_id:
            g = s.get(CreditGrant, e.grant_id)
            s.refresh(g)
            if g.remaining != g.amount:
                raise Conflict(f"{g.amount - g.remaining} of the {g.amount} credits of entry "
                               f"{entry_id} are spent or expired; correct with an adjustment.")
            rev = _post(s, account, type="reversal", amount=-g.amount, actor=actor,
                        grant_id=g.id, related_entry_id=e.id, reason=reason,
                        payment_id=e.payment_id, idempotency_key=key, request_hash=h)
            s.flush()
            s.add(Allocation(entry_id=rev.id, grant_id=g.id, credits=-g.remaining))
            g.remaining = 0
            s.flush()
            return rev
        raise Conflict(f"A {e.type} entry cannot be reversed; make an adjustment instead.")

    return _idempotent(key, h, body)


# --- reads -------------------------------------------------------------------------------------

def balance(customer_id: int) -> int:
    return db.session.scalar(select(Account.balance).where(Account.customer_id == customer_id)) or 0


def live_grants(customer_id: int) -> list[CreditGrant]:
    """The customer's buckets that still hold credits, in draw order."""
    # By account: the (account_id, remaining, expires_at) index serves it (grants have no index
    # on customer_id, and a customer has exactly one account).
    account = select(Account.id).where(Account.customer_id == customer_id).scalar_subquery()
    return list(db.session.scalars(
        select(CreditGrant)
        .where(CreditGrant.account_id == account, CreditGrant.remaining != 0)
        .order_by(CreditGrant.expires_at.is_(None), CreditGrant.expires_at, CreditGrant.id)))


def entries_page(*, customer_id: int | None = None, before_id: int | None = None,
                 limit: int = 50, types: Iterable[str] | None = None,
                 feature: str | None = None, reference: str | None = None) -> list[LedgerEntry]:
    """Entries newest first, keyset-paged by id (`before_id` is the last id of the prior page)."""
    q = select(LedgerEntry)
    if customer_id is not None:
        q = q.where(LedgerEntry.customer_id == customer_id)
    if before_id is not None:
        q = q.where(LedgerEntry.id < before_id)
    if types:
        q = q.where(LedgerEntry.type.in_(list(types)))
    if feature:
        q = q.where(LedgerEntry.feature == feature)
    if reference:
        q = q.where(LedgerEntry.reference == reference)
    return list(db.session.scalars(q.order_by(LedgerEntry.id.desc()).limit(limit)))


__all__ = [
    "Actor", "SYSTEM", "grant", "debit", "refund", "adjust", "expire_grant", "expire_due",
    "clawback", "reverse", "balance", "live_grants", "entries_page", "lock_account",
    "lock_accounts", "post_debit", "post_grant", "post_clawback", "fingerprint", "find_by_key",
    "plan_draw", "expired_clause",
]
