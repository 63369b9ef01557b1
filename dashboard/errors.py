"""HTML error pages for the dashboard (the API answers JSON envelopes of its own)."""
from __future__ import annotations

import logging

from flask import Flask, request
from werkzeug.exceptions import HTTPException

from dashboard import htmx
from services.core.errors import ServiceError

log = logging.getLogger("creditdesk.errors")

TITLES = {400: "Bad request", 402: "Not enough credits", 403: "Not allowed", 404: "Not found",
          405: "Method not allowed", 409: "Conflict", 413: "Too large", 422: "Check your input",
          429: "Slow down", 500: "Something went wrong", 502: "Payment provider unavailable"}
MESSAGES = {
    403: "Your role does not include this page. Ask an admin if you need access.",
    404: "There is nothing at this address.",
    500: "The error has been logged with the request id below.",
}


def _page(code: int, message: str | None = None):
    return htmx.render("errors.html", "content", code=code, title=TITLES.get(code, "Error"),
                       message=message or MESSAGES.get(code, "")), code


def init_app(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def _http(err: HTTPException):
        if request.path.startswith("/api/"):
            return err
        return _page(err.code or 500, MESSAGES.get(err.code or 500, err.description))

    @app.errorhandler(ServiceError)
    def _service(err: ServiceError):
        return _page(err.status, err.message)

    @app.errorhandler(Exception)
    def _unexpected(err: Exception):
        log.exception("http.unhandled")
        if request.path.startswith("/api/"):
            raise err
        return _page(500)
