"""Security headers on every response; CSRF failures as a clear 400."""
from __future__ import annotations

from flask import Flask, request
from flask_wtf.csrf import CSRFError

from dashboard import htmx

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; "
       "form-action 'self'; frame-ancestors 'none'")


def init_app(app: Flask) -> None:
    @app.after_request
    def _headers(resp):
        h = resp.headers
        h.setdefault("Content-Security-Policy", CSP)
        h.setdefault("X-Frame-Options", "DENY")
        h.setdefault("X-Content-Type-Options", "nosniff")
        h.setdefault("Referrer-Policy", "same-origin")
        h.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
        if request.path.startswith("/static/"):
            h.setdefault("Cache-Control", "public, max-age=3600")
        elif "Cache-Control" not in h:
            h["Cache-Control"] = "no-store"
        return resp

    @app.errorhandler(CSRFError)
    def _csrf(err):
        if request.path.startswith("/api/"):
            raise err
        return htmx.render("errors.html", "content", code=400, title="Form expired",
                           message="The form's security token is missing or expired. "
                                   "Reload the page and try again."), 400
