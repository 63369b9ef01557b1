"""Small helpers shared by the operations pages (no blueprint here)."""
from __future__ import annotations

from urllib.parse import urlsplit

from flask import request, url_for

from dashboard import htmx


def client_ip() -> str | None:
    return request.remote_addr


def form_status(code: int) -> int:
    """The status of a form re-rendered with its errors. base.html tells htmx to swap 400, 402,
    409, 422 and 429 answers, so the real status goes to htmx and plain posts alike; anything
    else (403, 404) is shown by app.js as an error message."""
    return code


def back_to(default_endpoint: str, **values) -> str:
    """A same-site relative `next` from the form, else the default page (never an open redirect)."""
    target = request.form.get("next", "") or ""
    parts = urlsplit(target)
    if target.startswith("/") and not target.startswith("//") and not parts.netloc \
            and not parts.scheme and "\\" not in target:
        return target
    return url_for(default_endpoint, **values)


def hx_target() -> str:
    return request.headers.get("HX-Target", "") if htmx.is_htmx() else ""
