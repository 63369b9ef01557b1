"""CSV export of the transactions page, with the page's own query string, streamed."""
from __future__ import annotations

from urllib.parse import urlencode

from flask import Blueprint, Response, request, url_for
from flask.globals import request_ctx
from flask_login import current_user

from dashboard import htmx
from dashboard.auth import require
from dashboard.respond import client_ip
from services.reporting import export, transactions

bp = Blueprint("exports", __name__)
LARGE = 100_000  # rows from which the preview explains how the download shows its progress


def _streamed(first: str, rest):
    """stream_with_context, started lazily: `first` (the CSV header) leaves without a context;
    the request context is pushed again only when the server asks for more. A response whose
    body is never read past its first chunk (HEAD, a client gone at once, a test client that
    peeks at the headers) pushes nothing, so no context is left for the garbage collector to pop
    at a random moment, and nothing is exported or audited."""
    ctx = request_ctx._get_current_object()

    def body():
        yield first
        with ctx:
            yield from rest()

    return body()


@bp.get("/transactions/export.csv")
@require("transactions.export")
def transactions_csv():
    job = export.prepare(transactions.Filters.parse(request.args))
    who = dict(staff_id=current_user.id, actor=current_user.email, ip=client_ip())
    resp = Response(_streamed(export.header(), lambda: export.stream(job, **who, with_header=False)),
                    mimetype="text/csv")
    resp.headers["Content-Disposition"] = f'attachment; filename="{job.filename}"'
    resp.headers["X-Accel-Buffering"] = "no"  # a proxy in front must not buffer the stream
    return resp


@bp.get("/transactions/export/preview")
@require("transactions.export")
def preview():
    """How many rows the filters select, and the download link (an htmx fragment or a page)."""
    filters = transactions.Filters.parse(request.args)
    job = export.prepare(filters)
    rows = export.count(job)
    query = urlencode(filters.args())
    url = url_for("exports.transactions_csv") + (f"?{query}" if query else "")
    return htmx.render("exports/preview.html", "preview", f=filters, job=job, rows=rows,
                       download_url=url, large=rows >= LARGE,
                       megabytes=rows * export.BYTES_PER_ROW / 1e6,
                       back_url=url_for("transactions.index") + (f"?{query}" if query else ""))
