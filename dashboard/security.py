"""Security headers on every response (HSTS over https); the proxies trusted for the client's
address and scheme; CSRF failures as a clear 400."""
from __future__ import annotations

from flask import Flask, request
from flask_wtf.csrf import CSRFError
from werkzeug.middleware.proxy_fix import ProxyFix

from dashboard import htmx

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; "
       "form-action 'self'; frame-ancestors 'none'")


def init_app(app: Flask) -> None:
    x_for = int(app.config.get("PROXY_FIX_X_FOR") or 0)
    x_proto = int(app.config.get("PROXY_FIX_X_PROTO") or 0)
    if x_for or x_proto:
        # Only as many X-Forwarded-* hops as there are proxies we run: a client can forge more.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=x_for, x_proto=x_proto)
    hsts = f"max-age={int(app.config.get('HSTS_MAX_AGE', 31536000))}; includeSubDomains"

    defaults = {"Content-Security-Policy": CSP, "X-Frame-Options": "DENY",
                "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
                "Permissions-Policy": "camera=(), microphone=(), geolocation=()"}

    @app.after_request
    def _headers(resp):
        h = resp.headers
        present = {k.lower() for k, _ in h.items()}  # one pass (a missing lookup raises inside)
        for name, value in defaults.items():
            if name.lower() not in present:
                h.add(name, value)
        if app.config.get("SESSION_COOKIE_SECURE") and request.is_secure \
                and "strict-transport-security" not in present:
            h.add("Strict-Transport-Security", hsts)
        if "cache-control" not in present:
            h.add("Cache-Control", "public, max-age=3600" if request.path.startswith("/static/")
                  else "no-store")
        return resp

    @app.errorhandler(CSRFError)
    def _csrf(err):
        if request.path.startswith("/api/"):
            raise err
        return htmx.render("errors.html", "content", code=400, title="Form expired",
                           message="The form's security token is missing or expired. "
                                   "Reload the page and try again."), 400
