"""Small helpers shared by the operations pages (no blueprint here)."""
from __future__ import annotations

from flask import request, url_for

from dashboard import htmx
from dashboard.respond import safe_next


def client_ip() -> str | None:
    return request.remote_addr


def form_status(code: int) -> int:
    """The status of a form re-rendered with its errors. base.html tells htmx to swap 400, 402,
    409, 422 and 429 answers, so the real status goes to htmx and plain posts alike; anything
    else (403, 404) is shown by app.js as an error message."""
    return code


def back_to(default_endpoint: str, **values) -> str:
    """A same-site relative `next` from the form, else the default page (never an open redirect)."""
    return safe_next(request.form.get("next", ""), url_for(default_endpoint, **values))


def hx_target() -> str:
    return request.headers.get("HX-Target", "") if htmx.is_htmx() else ""
