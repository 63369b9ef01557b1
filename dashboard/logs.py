"""Structured JSON logs carrying the request id; every response returns X-Request-Id."""
from __future__ import annotations

import logging
import re
import sys
import time
import uuid

from flask import Flask, g, request
from pythonjsonlogger.json import JsonFormatter

from services.core import context

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = context.request_id()
        return True


def init_app(app: Flask) -> None:
    root = logging.getLogger()
    if not any(getattr(h, "_creditdesk", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler._creditdesk = True  # type: ignore[attr-defined]
        if app.config.get("LOG_JSON", True):
            handler.setFormatter(JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
                rename_fields={"asctime": "ts", "levelname": "level", "name": "logger"}))
        handler.addFilter(_RequestIdFilter())
        root.addHandler(handler)
    root.setLevel(app.config.get("LOG_LEVEL", "INFO"))
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    # APScheduler logs "Running job"/"executed successfully" at INFO for every tick of every
    # job (four of them every 5 s); job runs record their own results (docs/jobs.md).
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    log = logging.getLogger("creditdesk.http")

    @app.before_request
    def _start():
        sent = request.headers.get("X-Request-Id", "")
        g.request_id = sent if _SAFE_ID.match(sent) else uuid.uuid4().hex
        g.request_token = context.set_request_id(g.request_id)
        g.started = time.perf_counter()

    @app.after_request
    def _finish(response):
        rid = getattr(g, "request_id", None)
        if rid:
            response.headers["X-Request-Id"] = rid
            ms = (time.perf_counter() - g.started) * 1000
            response.headers["Server-Timing"] = f"app;dur={ms:.1f}"
            if not request.path.startswith("/static/"):
                log.info("http.request", extra={"method": request.method, "path": request.path,
                                                "status": response.status_code,
                                                "ms": round(ms, 1)})
        return response

    @app.teardown_request
    def _reset(_exc):
        token = g.pop("request_token", None)
        if token is not None:
            context.reset_request_id(token)
