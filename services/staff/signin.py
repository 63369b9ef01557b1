"""Staff sign-in: password check, failed sign-ins counted per account and shared by every process.

Five failures (LOGIN_MAX_FAILURES) within 15 minutes (LOGIN_FAILURE_WINDOW_SECONDS) lock the
account for 15 minutes (LOGIN_LOCK_SECONDS), or until an admin unlocks it. The count lives on the
staff row and moves only through conditional UPDATEs that hold while the account is unlocked, so
gunicorn workers and replicas racing on one account count exactly five failures, and a correct
password that was checked while the lock fell is still refused.

An unknown (or deactivated) email gets the same answers, counted in the rate-limit storage (Redis
when REDIS_URL is set, else this process's memory): no row is ever created for it.
"""
from __future__ import annotations

import math
import secrets
import time
from datetime import datetime, timedelta

from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app
from limits import storage as limit_storage
from sqlalchemy import case, or_, select, update

from models import Staff, db, utcnow
from services.core import audit
from services.core.db import atomic
from services.core.errors import Conflict, ServiceError, ValidationFailed
from services.staff.accounts import _hasher, check_password, hash_password, validate_password


class AccountLocked(ServiceError):
    """Too many failed sign-ins: this account is locked for a while."""
    status, code, retryable = 429, "ACCOUNT_LOCKED", True

    def __init__(self, seconds: float, *, checked: bool = False):
        self.retry_after = max(1, math.ceil(seconds))
        self.checked = checked  # a password was checked (and failed) on this attempt
        minutes = max(1, math.ceil(self.retry_after / 60))
        super().__init__(f"Too many failed sign-ins: this account is locked for {minutes} "
                         f"minute{'s' if minutes > 1 else ''}. Try again later, or ask an admin "
                         "to unlock it.")


def _policy() -> tuple[int, int, int]:
    cfg = current_app.config
    return (int(cfg.get("LOGIN_MAX_FAILURES", 5)), int(cfg.get("LOGIN_FAILURE_WINDOW_SECONDS", 900)),
            int(cfg.get("LOGIN_LOCK_SECONDS", 900)))


def _unlocked(now: datetime):
    return or_(Staff.locked_until.is_(None), Staff.locked_until <= now)


def sign_in(*, email: str, password: str, ip: str | None) -> Staff | None:
    """The active staff member with this email and password (sign-in audited), None for a wrong
    email or password (audited), or AccountLocked: the password is never checked while locked."""
    email = (email or "").strip().lower()[:320]
    password = password or ""
    now = utcnow()
    staff = db.session.scalar(select(Staff).where(Staff.email == email))
    if staff is None or not staff.active:
        return _unknown(email, password, ip)
    _refuse_if_locked(staff, now)
    if check_password(staff, password):
        return _succeeded(staff, ip)
    _failed(staff, email, ip)
    return None


def change_password(*, staff: Staff, current: str, new: str, ip: str | None) -> Staff:
    """A signed-in staff member replaces their own password (after an admin's one-time reset,
    or at will). A wrong current password counts as a failed sign-in (five lock the account, as
    on the sign-in page). Every session of the account ends with the change; the caller signs the
    current one in again with the new session version. Audited, the password never stored."""
    validate_password(new)
    if new == current:
        raise ValidationFailed("Choose a password other than the current one.",
                               details={"new_password": "unchanged"})
    _refuse_if_locked(staff, utcnow())
    checked = staff.password_hash
    if not check_password(staff, current):
        _failed(staff, staff.email, ip, action="staff.password_change_refused")
        raise ValidationFailed("The current password is not right.",
                               details={"current_password": "wrong"})
    new_hash = hash_password(new)  # the slow hash before the row lock, not under it
    with atomic() as s:
        member = s.get(Staff, staff.id, with_for_update=True, populate_existing=True)
        if member.password_hash != checked:  # reset or changed meanwhile: the check is stale
            raise Conflict("The password was changed meanwhile; sign in again.")
        member.password_hash = new_hash
        member.session_version += 1
        audit.record(action="staff.password_change", staff=member, target_type="staff",
                     target_id=member.id, ip=ip)
    return member


def _refuse_if_locked(staff: Staff, now: datetime) -> None:
    """AccountLocked while the lock runs: the password is never checked during it."""
    if staff.locked_until is not None and staff.locked_until > now:
        raise AccountLocked((staff.locked_until - now).total_seconds())


def _succeeded(staff: Staff, ip: str | None) -> Staff:
    """Claim the sign-in only if the account is still unlocked (a lock set by another process
    while this password was being hashed wins), clearing the failure count."""
    now = utcnow()
    with atomic() as s:
        done = s.execute(update(Staff).where(Staff.id == staff.id, _unlocked(now)).values(
            failed_logins=0, first_failed_at=None, locked_until=None, last_login_at=now)
            .execution_options(synchronize_session=False))
        if done.rowcount != 1:
            until = s.scalar(select(Staff.locked_until).where(Staff.id == staff.id))
            raise AccountLocked((until - now).total_seconds() if until else 1)
        audit.record(action="login.success", staff=staff, ip=ip)
    db.session.refresh(staff)
    return staff


def _failed(staff: Staff, email: str, ip: str | None, *, action: str = "login.failed") -> None:
    """Count one failure in one statement; the one that reaches the limit sets the lock.

    A failure that lands while the account is locked (its password was checked before the lock
    fell) is not counted: the WHERE clause refuses it, so the count stops at exactly the limit.
    """
    limit, window, lock = _policy()
    now = utcnow()
    fresh = or_(Staff.first_failed_at.is_(None), Staff.first_failed_at <= now - timedelta(seconds=window),
                Staff.locked_until.is_not(None))  # a lock that has run out starts a new count
    count = case((fresh, 1), else_=Staff.failed_logins + 1)
    with atomic() as s:
        row = s.execute(
            update(Staff).where(Staff.id == staff.id, _unlocked(now)).values(
                failed_logins=count, first_failed_at=case((fresh, now), else_=Staff.first_failed_at),
                locked_until=case((count >= limit, now + timedelta(seconds=lock)), else_=None))
            .returning(Staff.failed_logins, Staff.locked_until)
            .execution_options(synchronize_session=False)).first()
        if row is None:
            until = s.scalar(select(Staff.locked_until).where(Staff.id == staff.id))
            raise AccountLocked((until - now).total_seconds() if until else 1)
        audit.record(action=action, actor=email, ip=ip)
        if row.locked_until is not None:
            audit.record(action="login.locked", actor=email, target_type="staff",
                         target_id=staff.id, ip=ip, after={"failures": row.failed_logins,
                                                           "locked_seconds": lock})
    db.session.expire(staff)
    if row.locked_until is not None:
        raise AccountLocked(lock, checked=True)


# --- emails without an (active) account: the same answers, no rows --------------------------

_DUMMY: str | None = None


def _burn(password: str) -> None:
    """Verify against a throw-away hash: an unknown email costs as much as a wrong password."""
    global _DUMMY
    _DUMMY = _DUMMY or hash_password(secrets.token_hex(8))
    try:
        _hasher().verify(_DUMMY, password)
    except (VerificationError, InvalidHashError):
        pass


def _store():
    ext = current_app.extensions
    if "login_decoys" not in ext:
        cfg = current_app.config
        uri = cfg.get("LOGIN_THROTTLE_STORAGE") or cfg.get("REDIS_URL") or "memory://"
        ext["login_decoys"] = limit_storage.storage_from_string(uri)
    return ext["login_decoys"]


def _unknown(email: str, password: str, ip: str | None) -> None:
    limit, window, lock = _policy()
    store, key, lock_key = _store(), f"creditdesk/login-decoy/{email}", f"creditdesk/login-decoy-lock/{email}"
    if store.get(lock_key):
        raise AccountLocked(store.get_expiry(lock_key) - time.time())
    _burn(password)
    count = store.incr(key, window)
    if count > limit and not store.get(lock_key):  # the lock ran out: a new count, as on a row
        store.clear(key)
        count = store.incr(key, window)
    if count > limit:  # checked while the lock fell: not counted, refused like a row would be
        raise AccountLocked(store.get_expiry(lock_key) - time.time())
    with atomic():
        audit.record(action="login.failed", actor=email, ip=ip)
    if count == limit:
        store.incr(lock_key, lock)
        raise AccountLocked(lock, checked=True)
    return None
