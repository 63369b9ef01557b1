"""API-key authentication: `Authorization: Bearer <key>`, scopes, and last_used_at."""
from __future__ import annotations

import functools
import logging
from datetime import timedelta

from flask import g, request
from sqlalchemy import or_, update

from models import ApiKey, utcnow
from services.core.db import atomic
from services.core.errors import ServiceError
from services.ledger.rules import Actor
from services.staff import accounts as staff_service

log = logging.getLogger("creditdesk.api.auth")
TOUCH_EVERY = timedelta(minutes=1)


class Unauthorized(ServiceError):
    """A valid API key is required: send `Authorization: Bearer <key>`."""
    status, code = 401, "AUTH_UNAUTHORIZED"


class Forbidden(ServiceError):
    """This API key does not have the scope this call needs."""
    status, code = 403, "AUTH_FORBIDDEN"


_CACHE = "creditdesk.api_key"


def current_api_key() -> staff_service.LiveKey | None:
    """The live API key of this request (verified once per request), or None."""
    env = request.environ
    if _CACHE not in env:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        key = None
        if scheme.lower() == "bearer" and token.strip():
            key = staff_service.live_api_key(token.strip())
        env[_CACHE] = key
    return env[_CACHE]


def _touch(key: staff_service.LiveKey) -> None:
    """Record last_used_at at most once a minute per key; a failure here never fails the call."""
    now = utcnow()
    if key.last_used_at is not None and now - key.last_used_at < TOUCH_EVERY:
        return
    try:
        with atomic() as s:
            s.execute(update(ApiKey).where(
                ApiKey.id == key.id,
                or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < now - TOUCH_EVERY),
            ).values(last_used_at=now).execution_options(synchronize_session=False))
        staff_service.note_api_key_used(key.id, now)
    except Exception:  # noqa: BLE001 - bookkeeping only
        log.warning("api.key.touch_failed", exc_info=True, extra={"api_key_id": key.id})


def api_key_required(*scopes: str):
    """The view runs only for a live API key holding every one of `scopes` (401 / 403 otherwise)."""
    def wrap(view):
        @functools.wraps(view)
        def inner(*args, **kwargs):
            key = current_api_key()
            if key is None:
                raise Unauthorized()
            missing = [s for s in scopes if s not in key.scope_list]
            if missing:
                raise Forbidden(f"This API key lacks the scope {', '.join(missing)}.",
                                details={"required": list(scopes), "missing": missing})
            g.api_key = key
            g.actor = Actor("api_key", str(key.id))
            _touch(key)
            return view(*args, **kwargs)

        inner.api_scopes = scopes
        return inner
    return wrap


def has_scope(scope: str) -> bool:
    key = current_api_key()
    return key is not None and scope in key.scope_list


__all__ = ["api_key_required", "current_api_key", "has_scope", "Unauthorized", "Forbidden"]
