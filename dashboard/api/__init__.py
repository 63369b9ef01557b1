"""The JSON API: the route modules listed in init_app, each a Blueprint `bp`.

init_app also makes every answer under /api/ a JSON envelope (errors included), exempts API
blueprints from CSRF (they authenticate with bearer keys or signatures, never cookies) and sets
up rate limiting. A module may set `RATE_LIMIT = None` to opt out (webhooks, health).
"""
from __future__ import annotations

import logging

from flask import Flask, current_app, g, request
from flask.sessions import SecureCookieSessionInterface
from flask_limiter import RateLimitExceeded
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from dashboard.api import limits
from dashboard.api.core import fail, from_error, ok
from dashboard.extensions import csrf
from services.core.errors import ServiceError

log = logging.getLogger("creditdesk.api")

API_PREFIX = "/api/"
DB_RETRY_AFTER = 5  # seconds: long enough for a failover or a restart to begin answering

HTTP_CODES = {400: "VALIDATION_ERROR", 401: "AUTH_UNAUTHORIZED", 403: "AUTH_FORBIDDEN",
              404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "PAYLOAD_TOO_LARGE",
              415: "VALIDATION_ERROR", 422: "VALIDATION_ERROR", 429: "RATE_LIMITED"}
HTTP_MESSAGES = {404: "There is no API endpoint at this path.",
                 405: "This endpoint does not accept this HTTP method.",
                 413: "The request body is too large."}


def is_api_request() -> bool:
    return request.path.startswith(API_PREFIX) or request.path == API_PREFIX.rstrip("/")


def _database_down(err: BaseException) -> bool:
    """The database cannot be reached or is not answering (never a constraint or a bug)."""
    if isinstance(err, (OperationalError, InterfaceError, DisconnectionError, PoolTimeout)):
        return True
    return isinstance(err, DBAPIError) and err.connection_invalidated


def database_unavailable():
    """503 DATABASE_UNAVAILABLE: retry after Retry-After with the same Idempotency-Key."""
    return fail("DATABASE_UNAVAILABLE", "The database is unavailable; retry after the delay in "
                "Retry-After with the same Idempotency-Key.", 503, retryable=True,
                headers={"Retry-After": str(DB_RETRY_AFTER)})


def _options():
    """OPTIONS under /api/: the envelope with the methods in `Allow` (404 for an unknown path)."""
    if request.method != "OPTIONS" or not is_api_request():
        return None
    adapter = current_app.url_map.bind_to_environ(request.environ)
    methods = sorted(adapter.allowed_methods())
    if not methods:
        return fail("NOT_FOUND", HTTP_MESSAGES[404], 404)
    return ok({"methods": methods}, 200, headers={"Allow": ", ".join(methods)})


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
            return fail("RATE_LIMITED", limits.breach_message(), 429, retryable=True,
                        headers={"Retry-After": str(limits.retry_after_seconds())})
        if status >= 500:
            return fail("INTERNAL_ERROR", "Internal error; it has been logged with the request id.",
                        status, retryable=True)
        headers = {}
        if status == 405 and getattr(err, "valid_methods", None):
            headers["Allow"] = ", ".join(sorted(err.valid_methods))
        message = HTTP_MESSAGES.get(status) or (err.description or err.name)
        return fail(HTTP_CODES.get(status, "VALIDATION_ERROR"), message, status, headers=headers)

    def service(err: ServiceError):
        resp = from_error(err)
        if getattr(err, "retry_after", None):
            resp.headers["Retry-After"] = str(err.retry_after)
        elif err.status == 503 and err.code == "DATABASE_UNAVAILABLE":
            resp.headers["Retry-After"] = str(DB_RETRY_AFTER)
        return resp

    def unexpected(err: Exception):
        if _database_down(err):
            log.warning("api.database_unavailable", extra={
                "path": request.path, "request_id": g.get("request_id"), "error": type(err).__name__})
            return database_unavailable()
        log.exception("api.unhandled", extra={"path": request.path,
                                              "request_id": g.get("request_id")})
        return fail("INTERNAL_ERROR", "Internal error; it has been logged with the request id.",
                    500, retryable=True)

    chain(HTTPException, http)
    chain(CSRFError, http)
    chain(ServiceError, service)
    chain(Exception, unexpected)


class _NoSessionForTheApi(SecureCookieSessionInterface):
    """The API authenticates with keys and never uses the staff's cookie session: its requests
    neither read nor set one (Flask otherwise builds a signing serializer on every request)."""

    def open_session(self, app, request):
        if request.path.startswith(API_PREFIX):
            return self.null_session_class()
        return super().open_session(app, request)


def init_app(app: Flask) -> None:
    # Imported here: the route modules import this package's helpers (core, auth, limits).
    from dashboard.api import (
        catalog,
        chat,
        cron,
        customers,
        debits,
        health,
        openapi,
        payments,
        refunds,
        tasks,
        webhook_endpoints,
        webhooks,
    )

    unlimited: set[str] = set()
    for module in (health, customers, debits, tasks, chat, catalog, payments, refunds, webhooks,
                   webhook_endpoints, cron, openapi):
        csrf.exempt(module.bp)
        app.register_blueprint(module.bp)
        if getattr(module, "RATE_LIMIT", True) is None:
            unlimited.add(module.bp.name)
    app.extensions["creditdesk_api_unlimited"] = unlimited
    app.session_interface = _NoSessionForTheApi()
    limits.init_app(app)
    app.before_request(_options)
    _install_error_handlers(app)


__all__ = ["database_unavailable", "init_app", "is_api_request"]
