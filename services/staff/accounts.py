"""Staff accounts and API keys: credentials, never stored in the clear."""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, replace

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app
from limits import parse_many
from psycopg.rows import namedtuple_row
from sqlalchemy import bindparam, func, or_, select, update

from models import ApiKey, Staff, db, utcnow
from models.staff import ROLES
from services.core import audit
from services.core.db import atomic, driver, run
from services.core.errors import Conflict, NotFound, ValidationFailed
from services.core.paging import keyset

API_SCOPES = ("customers:read", "customers:write", "debits:write", "grants:write",
              "tasks:write", "payments:write", "webhooks:write")
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


def logged_out(*, staff: Staff, ip: str | None) -> None:
    """Sign-out ends the session on the server too: the old cookie's version no longer matches."""
    with atomic() as s:
        _bump_sessions(s, staff.id)
        audit.record(action="logout", staff=staff, ip=ip)


def _bump_sessions(s, staff_id: int) -> None:
    """One UPDATE, so that concurrent bumps from several processes never lose one."""
    s.execute(update(Staff).where(Staff.id == staff_id)
              .values(session_version=Staff.session_version + 1)
              .execution_options(synchronize_session=False))


# --- API keys ------------------------------------------------------------------------------------

def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def rate_limit_value(raw: str | None) -> str | None:
    """A key's rate limit in Flask-Limiter notation ("100 per minute", "10/second; 500/hour"),
    normalised; None for empty (not throttled). 422 when it does not parse."""
    raw = (raw or "").strip()
    if not raw:
        return None
    try:
        items = parse_many(raw)
    except ValueError:
        items = []
    if not items or len(raw) > 64 or any(i.amount < 1 for i in items):
        raise ValidationFailed("Write the rate limit like “100 per minute” or “10/second; 500/hour”.",
                               details={"rate_limit": "invalid"})
    return raw


def create_api_key(*, name: str, scopes: list[str] | None = None, by=None,
                   ip: str | None = None, rate_limit: str | None = None) -> tuple[ApiKey, str]:
    """Create a key; returns (row, plain key). The plain key is shown once and never stored."""
    rate_limit = rate_limit_value(rate_limit)
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
                     created_by_id=getattr(by, "id", None), rate_limit=rate_limit)
        s.add(key)
        s.flush()
        audit.record(action="apikey.create", staff=by, target_type="api_key", target_id=key.id,
                     after={"name": name, "prefix": prefix, "scopes": scopes,
                            **({"rate_limit": rate_limit} if rate_limit else {})}, ip=ip)
        return key, plain


def set_api_key_rate_limit(*, key_id: int, rate_limit: str | None, by=None,
                           ip: str | None = None) -> ApiKey:
    """Set (or clear, with None/empty) a key's own rate limit; applies from its next call."""
    value = rate_limit_value(rate_limit)
    with atomic() as s:
        key = s.get(ApiKey, key_id, with_for_update=True)
        if key is None:
            raise NotFound(f"No API key {key_id}.")
        if key.rate_limit != value:
            audit.record(action="apikey.rate_limit", staff=by, target_type="api_key",
                         target_id=key.id, before={"rate_limit": key.rate_limit},
                         after={"rate_limit": value}, ip=ip)
            key.rate_limit = value
        forget_api_key(key.id)
        return key


@dataclass(frozen=True)
class LiveKey:
    """What a request needs of its API key: checked on every call, so no ORM object is built."""

    id: int
    scopes: str
    last_used_at: object
    rate_limit: str | None = None

    @property
    def scope_list(self) -> list[str]:
        return [s for s in self.scopes.split(",") if s]


_LIVE_KEY = select(ApiKey.__table__.c.id, ApiKey.__table__.c.key_hash, ApiKey.__table__.c.scopes,
                   ApiKey.__table__.c.last_used_at, ApiKey.__table__.c.rate_limit).where(
    ApiKey.__table__.c.prefix == bindparam("prefix"), ApiKey.__table__.c.revoked_at.is_(None))


_PG_LIVE_KEY = ("SELECT id, key_hash, scopes, last_used_at, rate_limit FROM api_keys "
                "WHERE prefix = %(prefix)s AND revoked_at IS NULL")


# Every API call needs its key: a verified key is kept in this process for API_KEY_CACHE_SECONDS
# (5 by default), keyed by the key's SHA-256. Revoking it (or changing its rate limit) drops it
# here at once; in the other processes it stops within that many seconds (docs/security.md).
# Unknown or revoked keys are never cached: a new key works on its first call everywhere.
_KEYS: dict[tuple[str, str], tuple[float, LiveKey]] = {}
_KEYS_MAX = 1024


def _cache_seconds() -> float:
    return float(current_app.config.get("API_KEY_CACHE_SECONDS", 5))


def _cache_scope() -> str:
    return str(db.engine.url)  # one cache per database (tests run many side by side)


def forget_api_key(key_id: int | None = None) -> None:
    """Drop a key (every key with None) from this process's cache."""
    for k, (_, live) in list(_KEYS.items()):
        if key_id is None or live.id == key_id:
            _KEYS.pop(k, None)


def note_api_key_used(key_id: int, at) -> None:
    """The cached key learns the last_used_at just recorded (no second touch within a minute)."""
    for k, (until, live) in list(_KEYS.items()):
        if live.id == key_id:
            _KEYS[k] = (until, replace(live, last_used_at=at))


def live_api_key(plain: str) -> LiveKey | None:
    """The live key matching this secret, or None: looked up by prefix, compared in constant time.
    Runs on every API call, so it reads one plain row (no ORM object), at most once per
    API_KEY_CACHE_SECONDS per process."""
    if not plain or not plain.startswith(KEY_PREFIX) or plain.count("_") < 2:
        return None
    digest = _digest(plain)
    ttl = _cache_seconds()
    ck = (_cache_scope(), digest)
    if ttl > 0:
        hit = _KEYS.get(ck)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
    prefix = plain[len(KEY_PREFIX):].split("_", 1)[0]
    pg = driver(db.session())
    if pg is not None:  # straight through the driver, prepared by psycopg
        row = run(pg, _PG_LIVE_KEY, {"prefix": prefix}, namedtuple_row).fetchone()
    else:
        row = db.session.execute(_LIVE_KEY, {"prefix": prefix}).first()
    if row is None or not hmac.compare_digest(row.key_hash, digest):
        _KEYS.pop(ck, None)
        return None
    live = LiveKey(id=row.id, scopes=row.scopes, last_used_at=row.last_used_at,
                   rate_limit=row.rate_limit)
    if ttl > 0:
        if len(_KEYS) >= _KEYS_MAX:
            _KEYS.clear()
        _KEYS[ck] = (time.monotonic() + ttl, live)
    return live


def revoke_api_key(*, key_id: int, by=None, ip: str | None = None) -> ApiKey:
    with atomic() as s:
        key = s.get(ApiKey, key_id)
        if key is None:
            raise NotFound(f"No API key {key_id}.")
        forget_api_key(key.id)
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
    stmt = select(Staff)
    if q:
        like = f"%{q.strip().lower()}%"
        stmt = stmt.where(or_(Staff.email.like(like), func.lower(Staff.name).like(like)))
    if role in ROLES:
        stmt = stmt.where(Staff.role == role)
    if status in ("active", "inactive"):
        stmt = stmt.where(Staff.active.is_(status == "active"))
    return Page(*keyset(stmt, Staff.id, cursor=after_id, limit=limit, newest_first=False))


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


def sign_out_everywhere(*, staff_id: int, by: Staff, ip: str | None = None) -> Staff:
    """End every session of a staff member (oneself included) on every device and process."""
    with atomic() as s:
        staff = _lock(s, staff_id)
        staff.session_version += 1
        audit.record(action="staff.sign_out_everywhere", staff=by, target_type="staff",
                     target_id=staff.id, ip=ip)
        return staff


def unlock(*, staff_id: int, by: Staff, ip: str | None = None) -> Staff:
    """Lift a sign-in lock and forget the failures counted so far."""
    with atomic() as s:
        staff = _lock(s, staff_id)
        before = {"failed_logins": staff.failed_logins,
                  "locked_until": staff.locked_until.isoformat() if staff.locked_until else None}
        staff.failed_logins, staff.first_failed_at, staff.locked_until = 0, None, None
        audit.record(action="staff.unlock", staff=by, target_type="staff", target_id=staff.id,
                     before=before, after={"failed_logins": 0, "locked_until": None}, ip=ip)
        return staff


def list_api_keys(*, status: str | None = None, after_id: int | None = None,
                  limit: int = 50) -> Page:
    """API keys newest first, optionally only active or revoked; keyset paged."""
    stmt = select(ApiKey)
    if status == "active":
        stmt = stmt.where(ApiKey.revoked_at.is_(None))
    elif status == "revoked":
        stmt = stmt.where(ApiKey.revoked_at.is_not(None))
    return Page(*keyset(stmt, ApiKey.id, cursor=after_id, limit=limit))


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
