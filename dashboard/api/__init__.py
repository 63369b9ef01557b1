"""The JSON API: every module here that defines a Blueprint `bp` is registered.

init_app also makes every answer under /api/ a JSON envelope (errors included), exempts API
blueprints from CSRF (they authenticate with bearer keys or signatures, never cookies) and sets
up rate limiting. A module may set `RATE_LIMIT = None` to opt out (webhooks, health).
"""
from __future__ import annotations

import importlib
import logging
import math
import pkgutil
import time

from flask import Flask, g, request
from flask_limiter import Limiter, RateLimitExceeded
from flask_limiter.util import get_remote_address
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from dashboard.api.auth import current_api_key
from dashboard.api.core import fail, from_error
from dashboard.extensions import csrf
from services.core.errors import ServiceError

log = logging.getLogger("creditdesk.api")

API_PREFIX = "/api/"
DEFAULT_KEY_LIMIT = "1200 per minute"
DEFAULT_IP_LIMIT = "120 per minute"

HTTP_CODES = {400: "VALIDATION_ERROR", 401: "AUTH_UNAUTHORIZED", 403: "AUTH_FORBIDDEN",
              404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "PAYLOAD_TOO_LARGE",
              415: "VALIDATION_ERROR", 422: "VALIDATION_ERROR", 429: "RATE_LIMITED"}
HTTP_MESSAGES = {404: "There is no API endpoint at this path.",
                 405: "This endpoint does not accept this HTTP method.",
                 413: "The request body is too large."}


def is_api_request() -> bool:
    return request.path.startswith(API_PREFIX) or request.path == API_PREFIX.rstrip("/")


def _rate_key() -> str:
    key = current_api_key() if is_api_request() else None
    return f"key:{key.id}" if key is not None else f"ip:{get_remote_address()}"


def _exempt_modules(app: Flask) -> set[str]:
    return app.extensions.get("creditdesk_api_unlimited", set())


def _limit_exempt() -> bool:
    from flask import current_app

    if not is_api_request():
        return True
    bp = request.blueprint
    return bp is not None and bp in _exempt_modules(current_app)


def _limit_value() -> str:
    from flask import current_app

    cfg = current_app.config
    if current_api_key() is not None:
        return cfg.get("API_KEY_RATE_LIMIT", DEFAULT_KEY_LIMIT)
    return cfg.get("API_IP_RATE_LIMIT", DEFAULT_IP_LIMIT)


def _limiter(app: Flask) -> Limiter:
    if app.config.get("REDIS_URL") and not app.config.get("RATELIMIT_STORAGE_URI"):
        app.config["RATELIMIT_STORAGE_URI"] = app.config["REDIS_URL"]
    app.config.setdefault("RATELIMIT_STORAGE_URI", "memory://")
    limiter = Limiter(key_func=_rate_key, application_limits=[_limit_value],
                      application_limits_exempt_when=_limit_exempt, headers_enabled=False,
                      key_prefix="creditdesk", swallow_errors=True)
    limiter.init_app(app)
    app.extensions["creditdesk_limiter"] = limiter
    return limiter


def _retry_after(app: Flask) -> int:
    limiter = app.extensions.get("creditdesk_limiter")
    current = limiter.current_limit if limiter else None
    if current is None:
        return 60
    return max(1, math.ceil(current.window[0] - time.time()))


def _install_error_handlers(app: Flask) -> None:
    """Wrap the dashboard's HTML handlers: under /api/ every error is a JSON envelope."""
    spec = app.error_handler_spec.setdefault(None, {})

    def previous(code_or_cls):
        # Flask files a handler under its exception's HTTP code (CSRFError: 400; HTTPException: None).
        code = code_or_cls.code if issubclass(code_or_cls, HTTPException) else None
        return spec.get(code, {}).get(code_or_cls)

    def chain(cls, api_handler):
        prev = previous(cls)

        def handler(err):
            if is_api_request():
                return api_handler(err)
            if prev is not None:
                return prev(err)
            if isinstance(err, HTTPException):
                return err
            raise err

        app.register_error_handler(cls, handler)

    def http(err: HTTPException):
        status = err.code or 500
        if isinstance(err, RateLimitExceeded) or status == 429:
            return fail("RATE_LIMITED", "Too many requests; slow down and retry after the delay "
                        "in Retry-After.", 429, retryable=True,
                        headers={"Retry-After": str(_retry_after(app))})
        if status >= 500:
            return fail("INTERNAL_ERROR", "Internal error; it has been logged with the request id.",
                        status, retryable=True)
        headers = {}
        if status == 405 and getattr(err, "valid_methods", None):
            headers["Allow"] = ", ".join(sorted(err.valid_methods))
        message = HTTP_MESSAGES.get(status) or (err.description or err.name)
        return fail(HTTP_CODES.get(status, "VALIDATION_ERROR"), message, status, headers=headers)

    def service(err: ServiceError):
        return from_error(err)

    def unexpected(err: Exception):
        log.exception("api.unhandled", extra={"path": request.path,
                                              "request_id": g.get("request_id")})
        return fail("INTERNAL_ERROR", "Internal error; it has been logged with the request id.",
                    500, retryable=True)

    chain(HTTPException, http)
    chain(CSRFError, http)
    chain(ServiceError, service)
    chain(Exception, unexpected)


def init_app(app: Flask) -> None:
    unlimited: set[str] = set()
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        bp = getattr(module, "bp", None)
        if bp is None:
            continue
        csrf.exempt(bp)
        app.register_blueprint(bp)
        if getattr(module, "RATE_LIMIT", True) is None:
            unlimited.add(bp.name)
    app.extensions["creditdesk_api_unlimited"] = unlimited
    _limiter(app)
    _install_error_handlers(app)


__all__ = ["init_app", "is_api_request"]
