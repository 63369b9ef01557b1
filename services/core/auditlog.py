"""Reading the audit trail: filters for the Audit log page, newest first, keyset paged.

Writing is `services.core.audit.record(...)`, inside the caller's transaction.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from sqlalchemy import func, select

from models import AuditLog, db
from services.core.paging import keyset


@dataclass(frozen=True)
class AuditFilter:
    actor: str = ""        # part of the actor (an email, "api_key:3", "system")
    action: str = ""       # exact action, or a prefix ending in "." (e.g. "staff.")
    target_type: str = ""
    target_id: str = ""
    since: date | None = None   # inclusive, UTC day
    until: date | None = None   # inclusive, UTC day

    def active(self) -> bool:
        return any((self.actor, self.action, self.target_type, self.target_id, self.since,
                    self.until))


@dataclass
class AuditPage:
    rows: list[AuditLog]
    next_before: int | None


def search(f: AuditFilter, *, before_id: int | None = None, limit: int = 50) -> AuditPage:
    """Rows matching every given filter, newest first; `before_id` continues a page."""
    stmt = select(AuditLog)
    if f.actor:
        stmt = stmt.where(func.lower(AuditLog.actor).like(f"%{_escape_like(f.actor.strip().lower())}%",
                                              escape="\\"))
    if f.action:
        if f.action.endswith("."):
            stmt = stmt.where(AuditLog.action.like(f"{_escape_like(f.action)}%", escape="\\"))
        else:
            stmt = stmt.where(AuditLog.action == f.action)
    if f.target_type:
        stmt = stmt.where(AuditLog.target_type == f.target_type)
    if f.target_id:
        stmt = stmt.where(AuditLog.target_id == f.target_id)
    if f.since:
        stmt = stmt.where(AuditLog.created_at >= datetime.combine(f.since, time.min))
    if f.until:
        stmt = stmt.where(AuditLog.created_at < datetime.combine(f.until + timedelta(days=1),
                                                                 time.min))
    return AuditPage(*keyset(stmt, AuditLog.id, cursor=before_id, limit=limit))


def get(row_id: int) -> AuditLog | None:
    return db.session.get(AuditLog, row_id)


def actions() -> list[str]:
    """Every action recorded so far, for the filter's choices."""
    return sorted(db.session.scalars(select(AuditLog.action).distinct()))


def target_types() -> list[str]:
    return sorted(t for t in db.session.scalars(select(AuditLog.target_type).distinct()) if t)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
