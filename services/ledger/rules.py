"""The ledger's rules, in one place: who moves credits, valid amounts, request fingerprints,
expiry, and the draw order of a debit.

Every way of posting (services.ledger.posting one movement at a time, services.ledger.hotpath's
three-statement debit, services.ledger.batch and services.ledger.bulk for many at once, the demo
loader) takes these from here, so a rule changes in one place. Nothing here writes.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_

from models import CreditGrant, LedgerEntry
from models.ledger import GRANT_SOURCES, PAID_SOURCES
from services.core import settings as app_settings
from services.core.errors import IdempotencyConflict, ValidationFailed

# What ledger.grant accepts: a 'deficit' bucket comes only from an overdraw adjustment.
POSTABLE_SOURCES = tuple(s for s in GRANT_SOURCES if s != "deficit")
MAX_CREDITS = 10**12  # far above any real movement, far below 2^63


@dataclass(frozen=True)
class Actor:
    """Who moved credits: staff, api_key, job, webhook or system, with an id."""

    type: str = "system"
    id: str | None = None

    @classmethod
    def of_staff(cls, staff) -> Actor:
        return cls("staff", str(staff.id))


SYSTEM = Actor()


def positive(credits, name: str = "credits") -> int:
    if isinstance(credits, bool) or not isinstance(credits, int):
        raise ValidationFailed(f"{name} must be a whole number", details={name: "not an integer"})
    if credits <= 0:
        raise ValidationFailed(f"{name} must be greater than zero", details={name: "must be > 0"})
    if credits > MAX_CREDITS:
        raise ValidationFailed(f"{name} is too large", details={name: f"must be <= {MAX_CREDITS}"})
    return credits


def _fingerprint_text(op: str, fields: dict) -> str:
    return json.dumps({"op": op, **fields}, sort_keys=True, default=str, separators=(",", ":"))


def fingerprint(op: str, **fields) -> str:
    """A stable hash of what a request asked for, to tell a retry from a reuse of its key."""
    return hashlib.sha256(_fingerprint_text(op, fields).encode()).hexdigest()


HOLE = "\x00hole\x00"  # where SQL fills in what only it knows (fingerprint_around)


def fingerprint_around(op: str, **fields) -> tuple[str, str]:
    """fingerprint()'s text split at HOLE, for SQL that fills in what only it knows: one field is
    HOLE itself (a whole number goes there) or a string containing HOLE (digits go there), and
    sha256(head + filler + tail) == fingerprint(op, **fields with the filler in place).
    (The `"name":value` pair with unescaped quotes can only be the field's own.)"""
    ((name, value),) = [(k, v) for k, v in fields.items() if isinstance(v, str) and HOLE in v]
    head, found, tail = _fingerprint_text(op, fields).partition(f"{json.dumps(name)}:{json.dumps(value)}")
    if not found:  # pragma: no cover - json.dumps writes the pair exactly so
        raise ValueError(f"no {name!r} in the fingerprint")
    left, right = json.dumps(value).split(json.dumps(HOLE)[1:-1])
    if value == HOLE:
        left = right = ""  # a number: no quotes
    return f"{head}{json.dumps(name)}:{left}", right + tail


def check_replay(entry: LedgerEntry, request_hash: str) -> LedgerEntry:
    """The entry a key made, if this request is the same one (IDEMPOTENCY_KEY_REUSED otherwise)."""
    if entry.request_hash != request_hash:
        raise IdempotencyConflict(
            f"Idempotency key {entry.idempotency_key!r} was already used for a different request."
        )
    return entry


def expired_clause(now: datetime):
    """SQL condition for grants past expiry (with grace) that still hold credits."""
    grace = timedelta(hours=int(app_settings.get("expiry_grace_hours")))
    cond = and_(CreditGrant.expires_at.is_not(None), CreditGrant.expires_at <= now - grace,
                CreditGrant.remaining > 0)
    if app_settings.get("paid_credits_never_expire"):
        cond = and_(cond, CreditGrant.source.not_in(PAID_SOURCES))
    return cond


def is_expired(g: CreditGrant, now: datetime, grace: timedelta, paid_never: bool) -> bool:
    if g.expires_at is None or g.remaining <= 0:
        return False
    if paid_never and g.source in PAID_SOURCES:
        return False
    return g.expires_at <= now - grace


def expiry_rules() -> tuple[timedelta, bool]:
    return (timedelta(hours=int(app_settings.get("expiry_grace_hours"))),
            bool(app_settings.get("paid_credits_never_expire")))


def plan_draw(grants: list, credits: int) -> list[tuple]:
    """Split `credits` over grants already in draw order: [(grant, take), ...]."""
    plan, left = [], credits
    for g in grants:
        if left == 0:
            break
        take = min(g.remaining, left)
        if take > 0:
            plan.append((g, take))
            left -= take
    return plan


# Every column of a ledger entry that a posting may leave empty.
ENTRY_DEFAULTS = dict(reason=None, feature=None, quantity=None, reference=None,
                      idempotency_key=None, request_hash=None, request_id=None, grant_id=None,
                      related_entry_id=None, payment_id=None, task_id=None, job_run_id=None,
                      metadata=None)


def entry_row(account: dict, *, type: str, amount: int, actor: Actor, at: datetime,
              **fields) -> dict:
    """The posting rule over plain rows: one entry continuing the account's balance chain.

    Moves `account` (a dict with id, customer_id, balance, version): balance by `amount`,
    version by one, and marks it touched. The ORM path (services.ledger.posting._post) and the
    three-statement hot path write the same columns; batch debits, set-based job postings
    (services.ledger.bulk) and the demo loader build their rows here.
    """
    before = account["balance"]
    account["balance"] = before + amount
    account["version"] = account.get("version", 0) + 1
    account["touched"] = True
    return {**ENTRY_DEFAULTS, "account_id": account["id"], "customer_id": account["customer_id"],
            "type": type, "amount": amount, "balance_before": before,
            "balance_after": before + amount, "actor_type": actor.type, "actor_id": actor.id,
            "created_at": at, **fields}
