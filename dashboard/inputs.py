"""One gate for every dashboard request's query string and form body, before any view runs.

PostgreSQL refuses NUL in text (a `DataError`, which used to surface as a 500 from whichever
filter passed it on), and no field of ours has a use for control characters. Checking here, once,
covers every page, fragment, export and Flask-Admin view, including filters added later; the
views then parse clean strings with the helpers in dashboard/respond.py. The JSON API (/api/)
answers its own 422 envelope for the same input (dashboard/api/core.py).
"""
from __future__ import annotations

import re

from flask import Flask, abort, request

# Longest value a dashboard field takes (a plan's description, 2,000 characters, is the longest,
# and the catalogue's live impact preview sends it in the query string).
MAX_VALUE = 4096
MAX_NAME = 64
# Query strings: no control character at all. Form bodies: tab and newlines are text (a
# textarea posts CR LF), every other C0 character is not.
QUERY_JUNK = re.compile(r"[\x00-\x1f]")
FORM_JUNK = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
SKIP = ("/api/", "/static/")
# A redirect target is only ever read through dashboard.respond.safe_next, which sends anything
# but a clean same-site path to "/": a hostile `next` must not stop a sign-in with a 400.
GUARDED = ("next",)
# Flask-Admin's paging arguments reach OFFSET/LIMIT as given (a negative or 25-digit page was a
# 500); they are small non-negative integers or nothing.
ADMIN_PREFIX, ADMIN_NUMBERS = "/admin/db/", ("page", "page_size")


def problem(values, junk: re.Pattern) -> str | None:
    """Why a MultiDict of request values is refused, or None when it is clean."""
    for name, items in values.lists():
        if len(name) > MAX_NAME or junk.search(name):
            return "A parameter name is too long or contains control characters."
        for value in items:
            if len(value) > MAX_VALUE:
                return f"“{name}” is longer than {MAX_VALUE:,} characters."
            if junk.search(value) and name not in GUARDED:
                return f"“{name}” contains control characters."
    return None


def check_request() -> None:
    if request.path.startswith(SKIP):
        return
    if QUERY_JUNK.search(request.path):
        abort(400, description="The address contains control characters.")
    why = problem(request.args, QUERY_JUNK)
    if why is None and request.path.startswith(ADMIN_PREFIX):
        for name in ADMIN_NUMBERS:
            value = request.args.get(name, "0")
            if not (value.isascii() and value.isdigit() and len(value) <= 6):
                why = f"“{name}” must be a whole number."
    if why is None and request.method in ("POST", "PUT", "PATCH", "DELETE"):
        why = problem(request.form, FORM_JUNK)
    if why:
        abort(400, description=why)


def init_app(app: Flask) -> None:
    app.before_request(check_request)
