"""The web helpers for thin routes, one module: query arguments (already free of control
characters, see dashboard/inputs.py), the request's client and htmx target, the one redirect
guard, and answering a change to htmx or a form post.

htmx gets the updated fragment (and an HX-Trigger event other parts of the page listen to);
a plain form post (no JavaScript) gets a flash message and a 303 redirect back to the page.
"""
from __future__ import annotations

import json
import unicodedata
from datetime import date
from urllib.parse import unquote, urlsplit

from flask import flash, redirect, request, url_for

from dashboard import htmx
from services.core import params
from services.core.errors import ServiceError


def int_arg(name: str, source=None) -> int | None:
    """A non-negative integer argument (query string, or `source` such as request.form), else None."""
    return params.to_int((source if source is not None else request.args).get(name, ""))


def str_arg(name: str, limit: int = 200) -> str:
    return request.args.get(name, "").strip()[:limit]


def date_arg(name: str) -> date | None:
    """YYYY-MM-DD (what <input type="date"> sends), else None."""
    return params.to_date(request.args.get(name, ""))


def client_ip() -> str | None:
    """The peer address (a proxy in front must be declared with ProxyFix, never trusted blindly)."""
    return request.remote_addr


def hx_target() -> str:
    return request.headers.get("HX-Target", "") if htmx.is_htmx() else ""


def form_status(code: int) -> int:
    """The status of a form re-rendered with its errors. base.html tells htmx to swap 400, 402,
    409, 422 and 429 answers, so the real status goes to htmx and plain posts alike; anything
    else (403, 404) is shown by app.js as an error message."""
    return code


def back_to(default_endpoint: str, **values) -> str:
    """A same-site relative `next` from the form, else the default page (never an open redirect)."""
    return safe_next(request.form.get("next", ""), url_for(default_endpoint, **values))


def safe_next(target: str | None, default: str = "/") -> str:
    """The one redirect guard (sign-in `?next=`, form `next`): a same-site path, else `default`.

    Refused: a scheme or host (`https:`, `//host`), any backslash (browsers read `/\\host` as
    `//host`), and any control or whitespace character, before or after percent-decoding
    (browsers drop a tab, so `/<TAB>/evil.test` is `//evil.test`; a newline breaks the header).
    Only the query may hold an encoded space (`?q=a%20b`), since it stays encoded there.
    """
    raw = target or ""
    text = raw
    for _ in range(3):  # a double-encoded `%252F` must not decode into the next check's blind spot
        text, before = unquote(text), text
        if text == before:
            break
    path, _, query = text.partition("?")
    if not raw.startswith("/") or path.startswith("//") or "\\" in text or len(raw) > 2000:
        return default
    if any(_unsafe(ch) for ch in path) or any(_unsafe(ch) and ch != " " for ch in query) \
            or any(_unsafe(ch) for ch in raw):
        return default
    parts = urlsplit(raw)
    if parts.scheme or parts.netloc:
        return default
    return raw


def _unsafe(ch: str) -> bool:
    return ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp")


def list_page(template: str, cursor: int | None, *, target: str | None = None, **ctx):
    """A keyset-paged list page: its next rows for "load more" (htmx with a cursor), its
    results for a filter change (htmx; only when aimed at `target`, if given), else the page."""
    block = None
    if htmx.is_htmx() and cursor:
        block = "rows"
    elif htmx.is_htmx() and target in (None, request.headers.get("HX-Target", "")):
        block = "results"
    return htmx.render(template, block, **ctx)


def with_trigger(resp, *events: str, message: str | None = None, category: str = "success"):
    """Fire client-side events after the swap (lists listen with hx-trigger="x from:body").

    `message` becomes a "flash" event that static/app.js shows in the flash area (as text).
    """
    payload: dict = dict.fromkeys(events, True)
    if message:
        payload["flash"] = {"message": message, "category": category}
    if payload:
        resp.headers["HX-Trigger"] = json.dumps(payload)
    return resp


def changed(*, template: str, block: str, message: str, back: str, events: tuple[str, ...] = (),
            category: str = "success", **ctx):
    """A change succeeded: the fragment for htmx, else flash + redirect back (POST/redirect/GET)."""
    if htmx.is_htmx():
        return with_trigger(htmx.render(template, block, **ctx), *events, message=message,
                            category=category)
    flash(message, category)
    return redirect(back, code=303)


def row_change(action, *, template: str, back: str, row, message, block: str = "row"):
    """Change one table row: `action()` returns the changed object (or raises a ServiceError);
    `row(obj)` is the row's template context (`row(None)`: the row as it is, after a refusal);
    `message(obj)` the success text. Answers as `changed` or `refused` do."""
    try:
        obj = action()
    except ServiceError as err:
        return refused(err, template=template, block=block, back=back, **row(None))
    return changed(template=template, block=block, back=back, message=message(obj), **row(obj))


def errors_on_fields(form, err: ServiceError, *, rename: dict[str, str] | None = None,
                     detail_messages: bool = False) -> None:
    """A service's refusal next to the form fields its details name (`rename`: the service's
    name -> the form's), else above the form. The message is the error's own, or with
    `detail_messages` each detail's."""
    details = err.details if isinstance(err.details, dict) else {}
    placed = False
    for name, message in details.items():
        field = getattr(form, (rename or {}).get(name, name), None)
        if field is not None and hasattr(field, "errors"):
            field.errors = [*field.errors, str(message if detail_messages else err)]
            placed = True
    if not placed:
        form.form_errors.append(str(err))


def refused(err, *, template: str, block: str, back: str, **ctx):
    """A change was refused by a service: the fragment with the reason (htmx), else flash + back."""
    if htmx.is_htmx():
        return htmx.render(template, block, error=str(err), **ctx), err.status
    flash(str(err), "error")
    return redirect(back, code=303)
