"""Query plans on PostgreSQL: the pages and API reads that support and finance use every day are
served by indexes, not by reading the ledger.

The ledger of bench/pages.py at a small size (a realistic mix of ~30,000 entries plus one
customer with 5,000 debits, statistics fresh) answers the same page list the benchmark times.
Every SELECT those requests run (captured with before_cursor_execute) is EXPLAINed with its own
parameters; no plan may read ledger_entries or allocations sequentially. Those two tables grow
by a row or more per debit, so a sequential scan that is cheap here is seconds at 1,000,000
entries (docs/performance.md, "Pages").
"""
from __future__ import annotations

import json
from contextlib import contextmanager

import pytest
from sqlalchemy import event, text

from models import db
from tests.helpers import StaffClient

pytestmark = pytest.mark.pg

BIG = {"ledger_entries", "allocations"}


@contextmanager
def captured():
    seen: list[tuple[str, object]] = []

    def on_execute(_conn, _cursor, statement, parameters, _context, executemany):
        head = statement.lstrip().split(None, 1)[0].upper()
        if head in ("SELECT", "WITH") and not executemany:
            seen.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", on_execute)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", on_execute)


def seq_scans(plan: dict) -> set[str]:
    found = set()
    if plan.get("Node Type") == "Seq Scan":
        found.add(plan["Relation Name"])
    for child in plan.get("Plans", []):
        found |= seq_scans(child)
    return found


def explain(statement: str, parameters) -> dict:
    raw = db.session.connection().connection.driver_connection
    with raw.cursor() as cur:
        cur.execute("EXPLAIN (FORMAT JSON) " + statement, parameters)
        out = cur.fetchone()[0]
    return (json.loads(out) if isinstance(out, str) else out)[0]["Plan"]


def test_busy_pages_read_the_ledger_through_indexes(pg_app, factory):
    from bench.ledger_data import realistic
    from bench.pages import facts, heavy_customer, pages
    from services.ledger import rollup as ledger_rollup
    from services.staff import accounts as staff
    from tests.conftest import _truncate_pg

    _truncate_pg(fresh_storage=True)  # no dead index entries from earlier tests to sway the plans
    realistic(db.session, entries=30_000)
    heavy_customer(db.session, debits=5_000)
    ledger_rollup.refresh(full=True)
    _, api_key = staff.create_api_key(name="plans")
    db.session.commit()
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(text("ANALYZE"))
    f = facts(db.engine.url.render_as_string(hide_password=False))
    assert f["heavy_n"] > 5_000

    admin = StaffClient(pg_app.test_client(), factory.staff(role="admin")).sign_in()
    api = pg_app.test_client()
    bad: dict[str, set[str]] = {}
    explained = 0
    for name, path, headers in pages(f, api_key):
        http = api if path.startswith("/api/") else admin.client
        db.session.expire_all()
        with captured() as seen:
            resp = http.get(path, headers=headers)
        assert resp.status_code == 200, (name, resp.status_code)
        for statement, parameters in seen:
            explained += 1
            scans = seq_scans(explain(statement, parameters)) & BIG
            if scans:
                bad[f"{name}: {' '.join(statement.split())[:160]}"] = scans
        db.session.rollback()
    assert explained > 30  # the pages really ran their queries through the listener
    assert bad == {}, json.dumps({k: sorted(v) for k, v in bad.items()}, indent=1)
