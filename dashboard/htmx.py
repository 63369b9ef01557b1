"""render(template, block, **ctx): the whole page, or one named block for an htmx request."""
from __future__ import annotations

from flask import make_response, render_template, request
from jinja2_fragments.flask import render_block


def is_htmx() -> bool:
    # A history restore asks for the whole page even though htmx sends the request.
    return bool(request.headers.get("HX-Request")) and \
        not request.headers.get("HX-History-Restore-Request")


def render(template: str, block: str | None = None, **ctx):
    """Whole page normally; only `block` when htmx asks. Always `Vary: HX-Request`."""
    if block and is_htmx():
        body = render_block(template, block, **ctx)
    else:
        body = render_template(template, **ctx)
    resp = make_response(body)
    resp.headers["Vary"] = "HX-Request"
    return resp
