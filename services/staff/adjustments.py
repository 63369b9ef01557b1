"""Staff credit adjustments with maker-checker.

Support may adjust up to the `support_adjustment_limit` setting (absolute credits) on their own;
a larger adjustment becomes a pending AdjustmentRequest that an admin other than the requester
approves (the credits move then, through the ledger) or rejects. Admins adjust directly.
Every step writes an audit row in the same transaction as the change it describes.
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.orm import joinedload

from models import AdjustmentRequest, LedgerEntry, db, utcnow
from services.core import audit
from services.core import settings as app_settings
from services.core.db import atomic
from services.core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from services.ledger import posting as ledger
from services.ledger import rules

REASON_CODES: list[tuple[str, str]] = [
    ("goodwill", "Goodwill gesture"),
    ("service_issue", "Service issue or outage"),
    ("billing_error", "Billing error"),
    ("failed_generation", "Failed or poor generation"),
    ("promotion", "Promotion or campaign"),
    ("duplicate_charge", "Duplicate charge"),
    ("abuse", "Abuse or fraud"),
    ("test_account", "Internal or test account"),
    ("other", "Other (explain in the note)"),
]
REASON_LABELS = dict(REASON_CODES)
MAX_NOTE = 500
APPROVERS = ("admin",)


@dataclass
class Outcome:
    """What an adjustment did: moved credits now (entry) or waits for approval (request)."""

    entry: LedgerEntry | None = None
    request: AdjustmentRequest | None = None
    replayed: bool = False

    @property
    def pending(self) -> bool:
        return self.request is not None and self.entry is None


def reason_text(code: str, note: str) -> str:
    return f"{REASON_LABELS.get(code, code)}: {note}".strip()


def limit_for(staff) -> int | None:
    """Largest absolute adjustment `staff` may make alone; None = no limit (approvers)."""
    if staff.role in APPROVERS:
        return None
    return int(app_settings.get("support_adjustment_limit"))


def _validate(credits, reason_code: str, note: str) -> tuple[int, str, str]:
    if isinstance(credits, bool) or not isinstance(credits, int) or credits == 0:
        raise ValidationFailed("Enter a whole number of credits other than zero.",
                               details={"credits": "must be a non-zero whole number"})
    if abs(credits) > rules.MAX_CREDITS:
        raise ValidationFailed("That is too many credits.", details={"credits": "too large"})
    if reason_code not in REASON_LABELS:
        raise ValidationFailed("Choose a reason code.", details={"reason_code": "required"})
    note = (note or "").strip()
    if len(note) < 3:
        raise ValidationFailed("Write a short note (at least 3 characters).",
                               details={"note": "required"})
    return credits, reason_code, note[:MAX_NOTE]


def submit(*, customer_id: int, credits: int, reason_code: str, note: str, staff,
           ip: str | None = None, key: str | None = None, allow_negative: bool = False) -> Outcome:
    """Adjust a customer's credits now, or file a request when it is above the staff's limit.

    `key` (one per rendered form) makes a double submit apply once. Only approvers may take
    a balance below zero (`allow_negative`).
    """
    credits, reason_code, note = _validate(credits, reason_code, note)
    if allow_negative and staff.role not in APPROVERS:
        raise Forbidden("Only an admin may take a balance below zero.")
    limit = limit_for(staff)
    ledger_key = f"adjust:{key}" if key else None
    with atomic() as s:
        if ledger_key and (done := ledger.find_by_key(s, ledger_key)):
            return Outcome(entry=done, replayed=True)
        if key and (req := _request_by_key(s, key)):
            return Outcome(request=req, replayed=True)
        if limit is not None and abs(credits) > limit:
            ledger.lock_account(s, customer_id=customer_id)  # 404 for an unknown customer
            req = AdjustmentRequest(customer_id=customer_id, credits=credits,
                                    reason_code=reason_code, note=note, status="pending",
                                    requested_by_id=staff.id, meta={"key": key, "limit": limit})
            s.add(req)
            s.flush()
            audit.record(action="credits.adjust_requested", staff=staff, target_type="customer",
                         target_id=customer_id, after={"request_id": req.id, "credits": credits,
                                                       "reason_code": reason_code, "limit": limit},
                         reason=note, ip=ip)
            return Outcome(request=req)
        entry = _apply(s, customer_id=customer_id, credits=credits, reason_code=reason_code,
                       note=note, staff=staff, ip=ip, key=ledger_key,
                       allow_negative=allow_negative, action="credits.adjust")
        return Outcome(entry=entry)


def _request_by_key(s, key: str) -> AdjustmentRequest | None:
    # Few pending requests exist; the JSON key lookup stays portable across both databases.
    for req in s.scalars(select(AdjustmentRequest).order_by(AdjustmentRequest.id.desc()).limit(200)):
        if isinstance(req.meta, dict) and req.meta.get("key") == key:
            return req
    return None


def _apply(s, *, customer_id: int, credits: int, reason_code: str, note: str, staff, ip,
           key: str | None, allow_negative: bool, action: str, extra: dict | None = None,
           by=None) -> LedgerEntry:
    """Move the credits through the ledger and audit it, inside the caller's transaction."""
    account = ledger.lock_account(s, customer_id=customer_id)
    before = account.balance
    entry = ledger.adjust(customer_id=customer_id, credits=credits,
                          reason=reason_text(reason_code, note),
                          actor=rules.Actor.of_staff(by or staff), key=key,
                          allow_negative=allow_negative,
                          meta={"reason_code": reason_code, **(extra or {})})
    audit.record(action=action, staff=by or staff, target_type="customer", target_id=customer_id,
                 before={"balance": before},
                 after={"balance": entry.balance_after, "credits": credits,
                        "reason_code": reason_code, "entry_id": entry.id, **(extra or {})},
                 reason=note, ip=ip)
    return entry


def _decide(request_id: int, staff, status: str) -> AdjustmentRequest:
    """Claim a pending request for `staff` (an approver who did not ask for it), once."""
    req = db.session.get(AdjustmentRequest, request_id)
    if req is None:
        raise NotFound(f"Adjustment request {request_id} not found.")
    if staff.role not in APPROVERS:
        raise Forbidden("Only an admin can decide on an adjustment request.")
    if req.requested_by_id == staff.id:
        raise Forbidden("A second person must decide: you asked for this adjustment.")
    done = db.session.execute(
        update(AdjustmentRequest)
        .where(AdjustmentRequest.id == request_id, AdjustmentRequest.status == "pending")
        .values(status=status, decided_by_id=staff.id, decided_at=utcnow())
        .execution_options(synchronize_session=False)).rowcount
    if done != 1:
        db.session.refresh(req)
        raise Conflict(f"This request was already {req.status}.")
    db.session.refresh(req)
    return req


def approve(*, request_id: int, staff, ip: str | None = None) -> AdjustmentRequest:
    """Approve a pending request: the credits move now, attributed to the approver."""
    with atomic() as s:
        req = _decide(request_id, staff, "approved")
        entry = _apply(s, customer_id=req.customer_id, credits=req.credits,
                       reason_code=req.reason_code, note=req.note, staff=req.requested_by,
                       by=staff, ip=ip, key=f"adjustment-request:{req.id}", allow_negative=False,
                       action="credits.adjust_approved",
                       extra={"request_id": req.id, "requested_by": req.requested_by_id})
        req.entry_id = entry.id
        return req


def reject(*, request_id: int, staff, note: str = "", ip: str | None = None) -> AdjustmentRequest:
    """Reject a pending request; nothing moves."""
    with atomic():
        req = _decide(request_id, staff, "rejected")
        req.meta = {**(req.meta or {}), "rejection_note": (note or "").strip()[:MAX_NOTE]}
        audit.record(action="credits.adjust_rejected", staff=staff, target_type="customer",
                     target_id=req.customer_id,
                     before={"request_id": req.id, "status": "pending"},
                     after={"request_id": req.id, "status": "rejected", "credits": req.credits},
                     reason=(note or "").strip()[:MAX_NOTE] or None, ip=ip)
        return req


def pending(*, customer_id: int | None = None, limit: int = 20) -> list[AdjustmentRequest]:
    """Pending requests, oldest first (with customer and requester loaded)."""
    q = (select(AdjustmentRequest).where(AdjustmentRequest.status == "pending")
         .options(joinedload(AdjustmentRequest.customer), joinedload(AdjustmentRequest.requested_by))
         .order_by(AdjustmentRequest.created_at, AdjustmentRequest.id).limit(limit))
    if customer_id is not None:
        q = q.where(AdjustmentRequest.customer_id == customer_id)
    return list(db.session.scalars(q))


def pending_count() -> int:
    return int(db.session.scalar(select(func.count(AdjustmentRequest.id))
                                 .where(AdjustmentRequest.status == "pending")) or 0)


def get(request_id: int) -> AdjustmentRequest:
    req = db.session.get(AdjustmentRequest, request_id)
    if req is None:
        raise NotFound(f"Adjustment request {request_id} not found.")
    return req
