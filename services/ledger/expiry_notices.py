"""grant.expiring: one notice per grant, `expiry_notice_days` before its credits expire.

Set-based and exactly once: each chunk is one conditional UPDATE that marks the grants it notifies
(`credit_grants.expiry_notice_at`, `WHERE expiry_notice_at IS NULL ... RETURNING`) with their
events written in the same transaction. Two runs at once: on PostgreSQL the second waits on the
row locks of the first and, re-checking the condition, skips what the first marked; SQLite runs
one writer at a time. A grant that will not expire (paid credits while `paid_credits_never_expire`
is on, a bucket already empty or expired, a deleted customer) gets no notice. 0 days = off.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update

from models import CreditGrant, Customer, utcnow
from models.ledger import PAID_SOURCES
from services.core import settings as app_settings
from services.core.db import atomic
from services.events import outbox

CHUNK = 500
G = CreditGrant.__table__


@dataclass
class NoticeResult:
    grants: int = 0
    credits: int = 0


def iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def _due(now: datetime, days: int):
    """Ids of the grants due a notice: expiring within `days`, not yet expired, not notified."""
    grace = timedelta(hours=int(app_settings.get("expiry_grace_hours")))
    q = (select(G.c.id).join(Customer.__table__, Customer.id == G.c.customer_id)
         .where(G.c.expiry_notice_at.is_(None), G.c.expires_at.is_not(None),
                G.c.expires_at <= now + timedelta(days=days), G.c.expires_at > now - grace,
                G.c.expired_at.is_(None), G.c.remaining > 0, Customer.deleted_at.is_(None)))
    if app_settings.get("paid_credits_never_expire"):
        q = q.where(G.c.source.not_in(PAID_SOURCES))
    return q.order_by(G.c.id).limit(CHUNK).correlate(None)  # its own scan of credit_grants


def notify_chunk(now: datetime, days: int) -> tuple[int, int]:
    """Mark and notify up to CHUNK grants in one transaction; (grants, credits)."""
    with atomic() as s:
        rows = s.execute(update(G).where(G.c.id.in_(_due(now, days)), G.c.expiry_notice_at.is_(None))
                         .values(expiry_notice_at=now)
                         .returning(G.c.id, G.c.customer_id, G.c.remaining, G.c.expires_at,
                                    G.c.source)).all()
        if not rows:
            return 0, 0
        ext = dict(s.execute(select(Customer.id, Customer.external_id)
                             .where(Customer.id.in_({r.customer_id for r in rows}))).all())
        for r in sorted(rows, key=lambda r: r.id):
            outbox.emit("grant.expiring", {"grant_id": r.id, "credits": int(r.remaining),
                                           "expires_at": iso(r.expires_at), "source": r.source},
                        customer_id=r.customer_id, external_id=ext[r.customer_id], session=s)
        return len(rows), sum(int(r.remaining) for r in rows)


def run_pass(*, now: datetime | None = None) -> NoticeResult:
    """Notify every grant due a notice now, a chunk per transaction."""
    now = now or utcnow()
    days = int(app_settings.get("expiry_notice_days"))
    result = NoticeResult()
    if days <= 0:
        return result
    while True:
        n, credits = notify_chunk(now, days)
        result.grants += n
        result.credits += credits
        if n == 0:  # nothing left (or what was left was taken by a concurrent run)
            return result
