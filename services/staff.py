"""Staff accounts and API keys: credentials, never stored in the clear."""
from __future__ import annotations

import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app
from sqlalchemy import select

from models import ApiKey, Staff, db, utcnow
from models.staff import ROLES
from services import audit
from services.db import atomic
from services.errors import Conflict, NotFound, ValidationFailed

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


def verify_api_key(plain: str) -> ApiKey | None:
    """The live key matching this secret, or None. Looked up by prefix, compared in constant time."""
    if not plain or not plain.startswith(KEY_PREFIX) or plain.count("_") < 2:
        return None
    prefix = plain[len(KEY_PREFIX):].split("_", 1)[0]
    key = db.session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
    if key is None or key.revoked_at is not None:
        return None
    return key if hmac.compare_digest(key.key_hash, _digest(plain)) else None


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
