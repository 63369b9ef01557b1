"""Browser test: an admin retries a partial distribution run from its page ("Retry failed")."""
from __future__ import annotations

import re

from playwright.sync_api import expect

PERIOD = "2033-03"  # a month the demo never distributes: this test's own run


def _partial_run(app) -> tuple[int, int, set[int]]:
    """A distribution run for PERIOD in which some customers' grants failed (a real trigger,
    removed again before the browser comes): (run id, errors, customers that failed)."""
    from sqlalchemy import select

    from models import JobRunError, db
    from services.jobs import distribution
    from tests.jobs.helpers import Breakage

    with app.app_context():
        breakage = Breakage(None)
        broken = breakage.inserts("e2e_fail_grants", "credit_grants",
                                  "NEW.source = 'distribution' AND NEW.customer_id % 3 = 0")
        try:
            result = distribution.run(period=PERIOD)
        finally:
            breakage.heal(broken)
        failed = set(db.session.scalars(select(JobRunError.customer_id)
                                        .where(JobRunError.run_id == result.run_id)))
        db.session.remove()
    return result.run_id, result.error_count, failed


def _granted(app, customers: set[int]) -> dict[int, int]:
    from sqlalchemy import func, select

    from models import LedgerEntry, db

    with app.app_context():
        keys = {f"distribution:{PERIOD}:{c}": c for c in customers}
        rows = db.session.execute(select(LedgerEntry.idempotency_key, func.count())
                                  .where(LedgerEntry.idempotency_key.in_(keys))
                                  .group_by(LedgerEntry.idempotency_key)).all()
        db.session.remove()
    return {keys[k]: n for k, n in rows}


def test_retry_failed_grants_exactly_the_missing_customers_from_the_run_page(login_as, live_server):
    run_id, errors, failed = _partial_run(live_server.app)
    assert errors > 0 and failed and _granted(live_server.app, failed) == {}
    page = login_as("admin")
    page.goto(f"/jobs/runs/{run_id}")
    summary = page.locator("#summary-title")
    expect(summary).to_contain_text("partial")
    expect(page.locator("#errors tbody tr")).to_have_count(errors)
    page.get_by_role("button", name="Retry failed").click()
    expect(page.get_by_text(re.compile(rf"Retrying the customers of run {run_id}"))).to_be_visible()
    # The retry runs in the background; the summary polls until it is done.
    expect(summary).to_contain_text("succeeded", timeout=20_000)
    page.reload()
    expect(page.locator("#retry")).to_have_count(0)  # nothing left to retry
    attempts = page.locator("table", has_text="Taken up").locator("tbody tr")
    expect(attempts).to_have_count(2)
    retry_row = attempts.nth(1)
    expect(retry_row).to_contain_text("retry")
    cells = retry_row.locator("td")
    assert int(cells.nth(5).inner_text().replace(",", "")) == errors  # taken up
    assert int(cells.nth(7).inner_text().replace(",", "")) == errors  # fixed
    # Every customer that failed has its grant now, once.
    assert _granted(live_server.app, failed) == dict.fromkeys(failed, 1)
    assert page.js_errors == []
