"""Staff users, API keys, the audit log and maker-checker adjustment requests."""
from __future__ import annotations

from datetime import datetime

from flask_login import UserMixin
from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Credits, Json, created, db, id_pk, utcnow

ROLES = ("admin", "support", "finance")


class Staff(UserMixin, db.Model):
    __tablename__ = "staff"

    id: Mapped[int] = id_pk()
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(default=True)
    # Carried in the session and checked on every request; bumped at sign-out, password
    # change or reset, role change, deactivation and "sign out everywhere".
    session_version: Mapped[int] = mapped_column(default=0)
    # Failed sign-ins in the current window, shared by every process (services/staff.py).
    failed_logins: Mapped[int] = mapped_column(default=0, server_default="0")
    first_failed_at: Mapped[datetime | None]
    locked_until: Mapped[datetime | None]
    created_at: Mapped[datetime] = created()
    last_login_at: Mapped[datetime | None]

    @property
    def is_active(self) -> bool:  # Flask-Login
        return self.active

    @property
    def is_locked(self) -> bool:
        """Signed-in refused after too many failures, until locked_until or an admin unlocks."""
        return self.locked_until is not None and self.locked_until > utcnow()

    def get_id(self) -> str:  # Flask-Login: invalidated by session_version
        return f"{self.id}:{self.session_version}"


class ApiKey(db.Model):
    __tablename__ = "api_keys"

    id: Mapped[int] = id_pk()
    name: Mapped[str] = mapped_column(String(120))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 of a 256-bit secret
    scopes: Mapped[str] = mapped_column(Text)  # comma separated
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    created_at: Mapped[datetime] = created()
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    # Flask-Limiter notation ("100 per minute"); NULL: the key is not throttled (docs/api.md)
    rate_limit: Mapped[str | None] = mapped_column(String(64))

    @property
    def scope_list(self) -> list[str]:
        return [s for s in self.scopes.split(",") if s]


class AuditLog(db.Model):
    __tablename__ = "audit_log"

    id: Mapped[int] = id_pk()
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    actor: Mapped[str] = mapped_column(String(320))  # email, "api_key:3", "system"
    action: Mapped[str] = mapped_column(String(64))  # dotted: credits.adjust, login.failed
    target_type: Mapped[str | None] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(64))
    ip: Mapped[str | None] = mapped_column(String(64))
    before: Mapped[dict | None] = mapped_column(Json)
    after: Mapped[dict | None] = mapped_column(Json)
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created()

    staff = relationship("Staff")

    __table_args__ = (
        Index("ix_audit_log_created", "created_at"),
        Index("ix_audit_log_action_created", "action", "created_at"),
        Index("ix_audit_log_target", "target_type", "target_id"),
    )


class AdjustmentRequest(db.Model):
    """A credit adjustment above the support limit, waiting for a second person."""

    __tablename__ = "adjustment_requests"

    id: Mapped[int] = id_pk()
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    credits: Mapped[int] = mapped_column(Credits)
    reason_code: Mapped[str] = mapped_column(String(32))
    note: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|approved|rejected
    requested_by_id: Mapped[int] = mapped_column(ForeignKey("staff.id"))
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    decided_at: Mapped[datetime | None]
    entry_id: Mapped[int | None] = mapped_column(ForeignKey("ledger_entries.id"))
    created_at: Mapped[datetime] = created()
    meta: Mapped[dict | None] = mapped_column("metadata", Json)

    customer = relationship("Customer")
    requested_by = relationship("Staff", foreign_keys=[requested_by_id])
    decided_by = relationship("Staff", foreign_keys=[decided_by_id])

    __table_args__ = (Index("ix_adjustment_requests_status", "status", "created_at"),)
