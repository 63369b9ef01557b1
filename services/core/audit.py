"""The audit trail: one row per staff action that changes anything, login and export."""
from __future__ import annotations

from models import AuditLog, db


def record(*, action: str, staff=None, actor: str | None = None, target_type: str | None = None,
           target_id: str | int | None = None, before: dict | None = None, after: dict | None = None,
           reason: str | None = None, ip: str | None = None) -> AuditLog:
    """Add an audit row to the current transaction (the caller's atomic() commits it)."""
    row = AuditLog(
        staff_id=getattr(staff, "id", None),
        actor=actor or getattr(staff, "email", None) or "system",
        action=action, target_type=target_type,
        target_id=None if target_id is None else str(target_id),
        before=before, after=after, reason=reason, ip=ip,
    )
    db.session.add(row)
    return row
