"""Staff accounts and API keys: credentials, never stored in the clear."""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app
from psycopg.rows import namedtuple_row
from sqlalchemy import bindparam, func, or_, select

from models import ApiKey, Staff, db, utcnow
from models.staff import ROLES
from services.core import audit
from services.core.db import atomic, driver, run
from services.core.errors import Conflict, NotFound, ValidationFailed

API_SCOPES = ("customers:read", "customers:write", "debits:write", "grants:write",
              "tasks:write", "payments:write")
KEY_PREFIX = "cdk_"


def _hasher() -> PasswordHasher:
    cfg = current_app.config
    return PasswordHasher(time_cost=cfg.get("ARGON2_TIME_COST", 3),
                          memory_cost=cfg.get("ARGON2_MEMORY_COST", 64 * 1024), parallelism=1)


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def check_password(staff: Staff, password: str) -> bool:
    try:
        ok = _hasher().verify(staff.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
    return ok


# A hash that always fails, so that an unknown email costs as much time as a wrong password.
_DUMMY = None


def authenticate(email: str, password: str) -> Staff | None:
    """The active staff member with this email and password, or None (same cost either way)."""
    global _DUMMY
    staff = db.session.scalar(select(Staff).where(Staff.email == (email or "").strip().lower()))
    if staff is None or not staff.active:
        _DUMMY = _DUMMY or hash_password(secrets.token_hex(8))
        try:
            _hasher().verify(_DUMMY, password or "")
        except (VerificationError, InvalidHashError):
            pass
        return None
    return staff if check_password(staff, password or "") else None


def validate_password(password: str) -> None:
    if len(password or "") < 12:
        raise ValidationFailed("Passwords need at least 12 characters.",
                               details={"password": "too short"})


def create(*, email: str, role: str, password: str, name: str = "", by=None,
           ip: str | None = None) -> Staff:
    email = (email or "").strip().lower()
    if "@" not in email:
        raise ValidationFailed("A valid email is required.", details={"email": "invalid"})
    if role not in ROLES:
        raise ValidationFailed(f"Role must be one of {', '.join(ROLES)}.", details={"role": "invalid"})
    validate_password(password)
    with atomic() as s:
        if s.scalar(select(Staff).where(Staff.email == email)):
            raise Conflict(f"A staff member with email {email} exists already.")
        staff = Staff(email=email, role=role, name=name, password_hash=hash_password(password))
        s.add(staff)
        s.flush()
        audit.record(action="staff.create", staff=by, target_type="staff", target_id=staff.id,
                     after={"email": email, "role": role}, ip=ip)
        return staff


def login_succeeded(*, staff: Staff, ip: str | None) -> None:
    with atomic():
        staff.last_login_at = utcnow()
        audit.record(action="login.success", staff=staff, ip=ip)


def logged_out(*, staff: Staff, ip: str | None) -> None:
    with atomic():
        audit.record(action="logout", staff=staff, ip=ip)


def login_failed(*, email: str, ip: str | None) -> None:
    """Audit a failed sign-in (the email as typed; never the password)."""
    with atomic():
        audit.record(action="login.failed", actor=email[:320], ip=ip)


# --- API keys ------------------------------------------------------------------------------------

def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_api_key(*, name: str, scopes: list[str] | None = None, by=None,
                   ip: str | None = None) -> tuple[ApiKey, str]:
    """Create a key; returns (row, plain key). The plain key is shown once and never stored."""
    name = (name or "").strip()
    if not name:
        raise ValidationFailed("A name is required.", details={"name": "required"})
    scopes = list(scopes or API_SCOPES)
    unknown = [s for s in scopes if s not in API_SCOPES]
    if unknown:
        raise ValidationFailed(f"Unknown scopes: {', '.join(unknown)}.", details={"scopes": unknown})
    prefix = secrets.token_hex(4)
    plain = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    with atomic() as s:
        key = ApiKey(name=name, prefix=prefix, key_hash=_digest(plain), scopes=",".join(scopes),
                     created_by_id=getattr(by, "id", None))
        s.add(key)
        s.flush()
        audit.record(action="apikey.create", staff=by, target_type="api_key", target_id=key.id,
                     after={"name": name, "prefix": prefix, "scopes": scopes}, ip=ip)
        return key, plain


@dataclass(frozen=True)
class LiveKey:
    """What a request needs of its API key: checked on every call, so no ORM object is built."""

    id: int
    scopes: str
    last_used_at: object

    @property
    def scope_list(self) -> list[str]:
        return [s for s in self.scopes.split(",") if s]


_LIVE_KEY = select(ApiKey.__table__.c.id, ApiKey.__table__.c.key_hash, ApiKey.__table__.c.scopes,
                   ApiKey.__table__.c.last_used_at).where(
    ApiKey.__table__.c.prefix == bindparam("prefix"), ApiKey.__table__.c.revoked_at.is_(None))


_PG_LIVE_KEY = ("SELECT id, key_hash, scopes, last_used_at FROM api_keys "
                "WHERE prefix = %(prefix)s AND revoked_at IS NULL")


def live_api_key(plain: str) -> LiveKey | None:
    """The live key matching this secret, or None: looked up by prefix, compared in constant time.
    Runs on every API call, so it reads one plain row (no ORM object)."""
    if not plain or not plain.startswith(KEY_PREFIX) or plain.count("_") < 2:
        return None
    prefix = plain[len(KEY_PREFIX):].split("_", 1)[0]
    pg = driver(db.session())
    if pg is not None:  # every API call: straight through the driver, prepared by psycopg
        row = run(pg, _PG_LIVE_KEY, {"prefix": prefix}, namedtuple_row).fetchone()
    else:
        row = db.session.execute(_LIVE_KEY, {"prefix": prefix}).first()
    if row is None or not hmac.compare_digest(row.key_hash, _digest(plain)):
        return None
    return LiveKey(id=row.id, scopes=row.scopes, last_used_at=row.last_used_at)


def revoke_api_key(*, key_id: int, by=None, ip: str | None = None) -> ApiKey:
    with atomic() as s:
        key = s.get(ApiKey, key_id)
        if key is None:
            raise NotFound(f"No API key {key_id}.")
        if key.revoked_at is None:
            key.revoked_at = utcnow()
            audit.record(action="apikey.revoke", staff=by, target_type="api_key",
                         target_id=key.id, before={"revoked": False}, after={"revoked": True},
                         ip=ip)
        return key


# --- staff administration (the dashboard's Staff page) -----------------------------------------

@dataclass
class Page:
    rows: list
    next_cursor: int | None  # keyset: pass back as `after`/`before`


def generate_password() -> str:
    """A one-time password, shown once to the admin who creates or resets an account."""
    return secrets.token_urlsafe(15)


def list_staff(*, q: str = "", role: str | None = None, status: str | None = None,
               after_id: int | None = None, limit: int = 50) -> Page:
    """Staff by id, filtered by text (email or name), role and active/inactive; keyset paged."""
    stmt = select(Staff).order_by(Staff.id)
    if q:
        like = f"%{q.strip().lower()}%"
        stmt = stmt.where(or_(Staff.email.like(like), func.lower(Staff.name).like(like)))
    if role in ROLES:
        stmt = stmt.where(Staff.role == role)
    if status in ("active", "inactive"):
        stmt = stmt.where(Staff.active.is_(status == "active"))
    if after_id:
        stmt = stmt.where(Staff.id > after_id)
    rows = list(db.session.scalars(stmt.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, rows[-1].id if more else None)


def get(staff_id: int) -> Staff:
    staff = db.session.get(Staff, staff_id)
    if staff is None:
        raise NotFound(f"No staff member {staff_id}.")
    return staff


def _lock(s, staff_id: int) -> Staff:
    staff = s.get(Staff, staff_id, with_for_update=True)
    if staff is None:
        raise NotFound(f"No staff member {staff_id}.")
    return staff


def _other_active_admins(s, staff_id: int) -> int:
    return s.scalar(select(func.count(Staff.id)).where(
        Staff.role == "admin", Staff.active.is_(True), Staff.id != staff_id)) or 0


def change_role(*, staff_id: int, role: str, by: Staff, ip: str | None = None) -> Staff:
    """Give a staff member another role; nobody changes their own, the last admin stays admin."""
    if role not in ROLES:
        raise ValidationFailed(f"Role must be one of {', '.join(ROLES)}.", details={"role": "invalid"})
    if staff_id == by.id:
        raise Conflict("You cannot change your own role; ask another admin.")
    with atomic() as s:
        staff = _lock(s, staff_id)
        if staff.role == role:
            return staff
        if staff.role == "admin" and staff.active and not _other_active_admins(s, staff.id):
            raise Conflict("This is the last active admin; make someone else admin first.")
        before = staff.role
        staff.role = role
        # A demotion must not leave an open admin session behind.
        staff.session_version += 1
        audit.record(action="staff.role", staff=by, target_type="staff", target_id=staff.id,
                     before={"role": before}, after={"role": role}, ip=ip)
        return staff


def set_active(*, staff_id: int, active: bool, by: Staff, ip: str | None = None) -> Staff:
    """Deactivate (their sessions end at once) or reactivate a staff member; never yourself."""
    if staff_id == by.id:
        raise Conflict("You cannot deactivate or reactivate yourself.")
    with atomic() as s:
        staff = _lock(s, staff_id)
        if staff.active == active:
            return staff
        if not active and staff.role == "admin" and not _other_active_admins(s, staff.id):
            raise Conflict("This is the last active admin; it cannot be deactivated.")
        staff.active = active
        staff.session_version += 1  # ends every session of this account
        audit.record(action="staff.reactivate" if active else "staff.deactivate", staff=by,
                     target_type="staff", target_id=staff.id, before={"active": not active},
                     after={"active": active}, ip=ip)
        return staff


def reset_password(*, staff_id: int, by: Staff, ip: str | None = None) -> tuple[Staff, str]:
    """A new one-time password for someone else (shown once); their sessions end."""
    if staff_id == by.id:
        raise Conflict("Use your own sign-in to change your password, not a reset.")
    password = generate_password()
    with atomic() as s:
        staff = _lock(s, staff_id)
        staff.password_hash = hash_password(password)
        staff.session_version += 1
        audit.record(action="staff.password_reset", staff=by, target_type="staff",
                     target_id=staff.id, ip=ip)
        return staff, password


def list_api_keys(*, status: str | None = None, after_id: int | None = None,
                  limit: int = 50) -> Page:
    """API keys newest first, optionally only active or revoked; keyset paged."""
    stmt = select(ApiKey).order_by(ApiKey.id.desc())
    if status == "active":
        stmt = stmt.where(ApiKey.revoked_at.is_(None))
    elif status == "revoked":
        stmt = stmt.where(ApiKey.revoked_at.is_not(None))
    if after_id:
        stmt = stmt.where(ApiKey.id < after_id)
    rows = list(db.session.scalars(stmt.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, rows[-1].id if more else None)


def get_api_key(key_id: int) -> ApiKey:
    key = db.session.get(ApiKey, key_id)
    if key is None:
        raise NotFound(f"No API key {key_id}.")
    return key


def emails_by_id(ids) -> dict[int, str]:
    """Staff emails for a set of ids (for "created by" columns) in one query."""
    ids = {i for i in ids if i}
    if not ids:
        return {}
    return dict(db.session.execute(select(Staff.id, Staff.email).where(Staff.id.in_(ids))).all())
