"""Refund by reference: give back every debit that carries one reference (seed 004's project
cancellation, e.g. `project:123`), for every customer, in one audited transaction.

`preview` says what a run would do (customers, debits, credits); `run` does it, under the locks
of every account involved (taken in id order), and refuses when the figures changed since the
preview the operator confirmed. Each debit is refunded through `ledger.refund` with the key
`refund-ref:<entry id>`, and only what is still returnable is asked for, so a second run (or a
run racing another) refunds nothing twice. Debits of deleted customers are left alone.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session, aliased

from models import Customer, LedgerEntry, db
from services.core import audit
from services.core.db import atomic
from services.core.errors import Conflict, ValidationFailed
from services.ledger import posting as ledger
from services.ledger.rules import Actor

MAX_REFERENCE = 200
TOP = 20  # customers listed in a preview


@dataclass
class Line:
    customer_id: int
    name: str
    email: str
    debits: int
    credits: int


@dataclass
class Preview:
    reference: str
    customers: int = 0
    debits: int = 0
    credits: int = 0
    done_debits: int = 0  # carry the reference but have nothing left to return
    lines: list[Line] = field(default_factory=list)

    @property
    def figures(self) -> tuple[int, int, int]:
        return self.customers, self.debits, self.credits


@dataclass
class Result:
    reference: str
    customers: int
    debits: int
    credits: int
    entry_ids: list[int]
    done_debits: int


def clean(reference: str | None) -> str:
    ref = (reference or "").strip()
    if not ref:
        raise ValidationFailed("Enter the reference, for example project:123.",
                               details={"reference": "required"})
    if len(ref) > MAX_REFERENCE:
        raise ValidationFailed("That reference is too long.", details={"reference": "too long"})
    return ref


def _rows(s: Session, reference: str) -> list[tuple[int, int, int]]:
    """(debit id, customer id, credits still returnable) of every live customer's debit."""
    back = aliased(LedgerEntry)
    returned = func.coalesce(func.sum(back.amount), 0)
    q = (select(LedgerEntry.id, LedgerEntry.customer_id, -LedgerEntry.amount - returned)
         .join(Customer, and_(Customer.id == LedgerEntry.customer_id, Customer.deleted_at.is_(None)))
         .outerjoin(back, and_(back.related_entry_id == LedgerEntry.id,
                               back.type.in_(("refund", "reversal"))))
         .where(LedgerEntry.reference == reference, LedgerEntry.type == "debit")
         .group_by(LedgerEntry.id, LedgerEntry.customer_id, LedgerEntry.amount)
         .order_by(LedgerEntry.customer_id, LedgerEntry.id))
    return [(int(i), int(c), int(left)) for i, c, left in s.execute(q)]


def _summarise(s: Session, reference: str, rows: list[tuple[int, int, int]]) -> Preview:
    todo = [r for r in rows if r[2] > 0]
    per: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for _id, cid, left in todo:
        per[cid][0] += 1
        per[cid][1] += left
    top = sorted(per.items(), key=lambda kv: (-kv[1][1], kv[0]))[:TOP]
    names = {}
    if top:
        names = {c.id: c for c in s.scalars(select(Customer).where(
            Customer.id.in_([cid for cid, _ in top])))}
    lines = [Line(customer_id=cid, name=names[cid].name or "", email=names[cid].email,
                  debits=n, credits=credits) for cid, (n, credits) in top]
    return Preview(reference=reference, customers=len(per), debits=len(todo),
                   credits=sum(r[2] for r in todo), done_debits=len(rows) - len(todo), lines=lines)


def preview(*, reference: str) -> Preview:
    """What refunding `reference` would give back now (nothing is written)."""
    ref = clean(reference)
    return _summarise(db.session, ref, _rows(db.session, ref))


def run(*, reference: str, staff, reason: str = "", expect: tuple[int, int, int] | None = None,
        ip: str | None = None) -> Result:
    """Refund every debit carrying `reference` (what is left of each), once, in one transaction.

    `expect` = (customers, debits, credits) of the preview the operator saw: a different figure
    now raises Conflict with the new preview in `details`, and nothing is refunded.
    """
    ref = clean(reference)
    note = (reason or "").strip()[:500]
    actor = Actor.of_staff(staff)
    with atomic() as s:
        ledger.lock_accounts(s, {cid for _i, cid, left in _rows(s, ref) if left > 0})
        rows = _rows(s, ref)  # again, under the locks: what is returnable now
        now = _summarise(s, ref, rows)
        if expect is not None and tuple(expect) != now.figures:
            raise Conflict("The debits of this reference changed since the preview; check the "
                           "new figures and confirm again.",
                           details={"customers": now.customers, "debits": now.debits,
                                    "credits": now.credits})
        entries = []
        for entry_id, _cid, left in rows:
            if left <= 0:
                continue
            entries.append(ledger.refund(
                entry_id=entry_id, actor=actor, key=f"refund-ref:{entry_id}",
                reason=f"refund of {ref}" + (f": {note}" if note else "")))
        credits = sum(e.amount for e in entries)
        audit.record(action="refund.by_reference", staff=staff, target_type="reference",
                     target_id=ref[:64], ip=ip, reason=note or None,
                     before={"reference": ref},
                     after={"reference": ref, "customers": now.customers, "debits": len(entries),
                            "credits": credits, "already_refunded_debits": now.done_debits})
        return Result(reference=ref, customers=now.customers, debits=len(entries), credits=credits,
                      entry_ids=[e.id for e in entries], done_debits=now.done_debits)


__all__ = ["Preview", "Result", "clean", "preview", "run"]
