"""Credit expiry: every grant past expires_at (plus grace) with credits left gets one expiry entry.

The rule is the ledger's (`ledger.expired_clause`: grace hours, paid credits never expire); this
module applies it set-based, a chunk of accounts per transaction: lock the accounts in id order,
re-read their due grants under the lock, post one expiry entry + allocation per grant and zero the
bucket. The entry's idempotency key `expiry:<grant_id>` is the one the ledger uses when a debit
expires a stale bucket on the way, so a grant can never be expired twice by the two paths.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select

from models import CreditGrant, db, utcnow
from services.core.db import among, atomic
from services.ledger import bulk as bulkledger
from services.ledger.rules import Actor, expired_clause

log = logging.getLogger("creditdesk.jobs")

CHUNK = 500  # accounts per transaction


@dataclass
class ExpiryResult:
    accounts: int = 0
    grants: int = 0
    credits: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)  # (customer_id, error)


def due_summary(*, now: datetime | None = None) -> dict:
    """What an expiry pass would do now, without writing: {grants, credits, accounts}."""
    now = now or utcnow()
    row = db.session.execute(select(func.count(CreditGrant.id),
                                    func.coalesce(func.sum(CreditGrant.remaining), 0),
                                    func.count(func.distinct(CreditGrant.account_id)))
                             .where(expired_clause(now))).one()
    return {"grants": int(row[0]), "credits": int(row[1]), "accounts": int(row[2])}


def _due_customers(now: datetime) -> list[int]:
    """Customers with due grants, in account order: one scan, then chunks walk this list."""
    rows = db.session.execute(
        select(CreditGrant.account_id, CreditGrant.customer_id).where(expired_clause(now))
        .group_by(CreditGrant.account_id, CreditGrant.customer_id)
        .order_by(CreditGrant.account_id)).all()
    db.session.rollback()  # end the read; each chunk is its own write transaction
    return [r[1] for r in rows]


def expire_chunk(customer_ids: list[int], *, now: datetime, actor: Actor,
                 job_run_id: int | None) -> tuple[int, int]:
    """Expire the due grants of these customers in one transaction; (grants, credits)."""
    with atomic() as s:
        accounts = bulkledger.lock_accounts(s, customer_ids)
        if not accounts:
            return 0, 0
        # by account id, so that ix_credit_grants_account_live finds them (there is no index by
        # customer: that plan read every due grant of the table for each chunk)
        due = s.execute(
            select(CreditGrant.id, CreditGrant.customer_id, CreditGrant.remaining)
            .where(among(s, CreditGrant.account_id,
                                    [a["id"] for a in accounts.values()]), expired_clause(now))
            .order_by(CreditGrant.account_id, CreditGrant.id)).all()
        batch = bulkledger.Batch(now=now, actor=actor, job_run_id=job_run_id, accounts=accounts)
        for gid, cid, remaining in due:
            batch.expire(cid, grant_id=gid, remaining=int(remaining))
        batch.flush(s)
        return len(due), sum(int(r[2]) for r in due)


def run_pass(*, now: datetime | None = None, actor: Actor = Actor("job", "expire_credits"),
             job_run_id: int | None = None, chunk: int = CHUNK,
             on_chunk: Callable[[int, int], None] | None = None) -> ExpiryResult:
    """Expire everything due at `now`, a chunk of accounts per transaction."""
    now = now or utcnow()
    result = ExpiryResult()
    due = _due_customers(now)
    for k in range(0, len(due), chunk):
        ids = due[k:k + chunk]
        try:
            n, credits = expire_chunk(ids, now=now, actor=actor, job_run_id=job_run_id)
        except Exception as err:  # one bad account must not stop the pass: retry one by one
            log.warning("expiry.chunk_failed", extra={"error": str(err), "accounts": len(ids)})
            n = credits = 0
            for cid in ids:
                try:
                    g, c = expire_chunk([cid], now=now, actor=actor, job_run_id=job_run_id)
                    n, credits = n + g, credits + c
                except Exception as one:
                    result.errors.append((cid, f"{type(one).__name__}: {one}"))
        result.accounts += len(ids)
        result.grants += n
        result.credits += credits
        if on_chunk:
            on_chunk(n, credits)
    return result
