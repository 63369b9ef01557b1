"""The jobs page: schedules, runs, errors, the dry-run preview before a real run, permissions."""
from __future__ import annotations

import time

from sqlalchemy import func, select, text

from models import AuditLog, CreditGrant, JobRun, db
from services.jobs import distribution
from services.jobs import runs as jobruns


def _wait_finished(run_id: int, timeout: float = 60.0) -> JobRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        db.session.expire_all()
        r = db.session.get(JobRun, run_id)
        if r.status != "running":
            return r
        db.session.rollback()
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} still running after {timeout} s")


def test_jobs_page_lists_each_job_with_schedule_and_next_fire(login):
    page = login("finance").get("/jobs/").get_data(as_text=True)
    for name in ("distribute_credits", "expire_credits", "recover_timeouts", "reconcile_ledger"):
        assert name in page
    assert "5 0 1 * *" in page and "JOBS_DISTRIBUTE_CREDITS_CRON" in page
    assert "Next fire" in page and "Leader process" in page
    assert "Run now</button>" not in page and "Preview…</button>" not in page  # look, not act


def test_support_cannot_see_jobs_and_finance_cannot_run_them(login):
    assert login("support").get("/jobs/").status_code == 403
    finance = login("finance")
    assert finance.post("/jobs/expire_credits/run").status_code == 403
    assert db.session.scalar(select(func.count(JobRun.id))) == 0


def test_preview_is_a_table_and_the_run_grants_exactly_that(login, make):
    customers = [make.customer() for _ in range(3)]
    admin = login("admin")
    page = admin.get("/jobs/distribute_credits/preview?period=2031-02").get_data(as_text=True)
    assert "Distribution preview" in page and "<table" in page
    for c in customers:
        assert c.email in page
    assert "Run distribution for 2031-02" in page
    assert db.session.scalar(select(func.count(JobRun.id))) == 0

    resp = admin.post("/jobs/distribute_credits/run", data={"period": "2031-02"})
    assert resp.status_code == 302 and "/jobs/runs/" in resp.headers["Location"]
    run_id = int(resp.headers["Location"].rstrip("/").split("/")[-1])
    run = _wait_finished(run_id)
    assert (run.status, run.users_count, run.processed_count) == ("succeeded", 3, 3)
    assert db.session.scalar(select(func.count(CreditGrant.id))
                             .where(CreditGrant.source == "distribution")) == 3
    audit = db.session.scalar(select(AuditLog).where(AuditLog.action == "jobs.run"))
    assert audit.target_id == str(run_id)

    # A second click is a no-op that points at the same run.
    again = admin.post("/jobs/distribute_credits/run", data={"period": "2031-02"})
    assert again.headers["Location"].endswith(f"/jobs/runs/{run_id}")
    assert db.session.scalar(select(func.count(JobRun.id))) == 1
    detail = admin.get(f"/jobs/runs/{run_id}").get_data(as_text=True)
    assert "Granted per segment" in detail and "free" in detail
    index = admin.get("/jobs/").get_data(as_text=True)
    assert f"/jobs/runs/{run_id}" in index and "2031-02" in index


def test_bad_period_is_refused_with_a_message(login):
    admin = login("admin")
    resp = admin.post("/jobs/distribute_credits/run", data={"period": "20-31"})
    assert resp.status_code == 302
    page = admin.get(resp.headers["Location"]).get_data(as_text=True)
    assert "YYYY-MM" in page
    assert db.session.scalar(select(func.count(JobRun.id))) == 0


def test_run_page_lists_per_customer_errors(login, make):
    make.customer()
    orphan = make.customer()
    db.session.execute(text("DELETE FROM accounts WHERE customer_id = :i"), {"i": orphan.id})
    db.session.commit()
    result = distribution.run(period="2031-03")
    page = login("finance").get(f"/jobs/runs/{result.run_id}").get_data(as_text=True)
    assert f"/customers/{orphan.id}" in page and "no credit account" in page


def test_run_now_of_the_reconcile_job_records_the_report(login, make):
    make.customer(credits=10)
    admin = login("admin")
    resp = admin.post("/jobs/reconcile_ledger/run")
    run = _wait_finished(int(resp.headers["Location"].rstrip("/").split("/")[-1]))
    assert run.status == "succeeded" and run.details["ok"] is True
    assert jobruns.last_reconcile().id == run.id
    page = admin.get(f"/jobs/runs/{run.id}").get_data(as_text=True)
    assert "Ledger is consistent" in page


def test_runs_fragment_for_htmx_paging(login, make):
    for i in range(30):
        jobruns.finish(run_id=jobruns.claim(job="expire_credits", period=f"p{i}").run_id)
    admin = login("admin")
    page = admin.get("/jobs/").get_data(as_text=True)
    assert "Older runs" in page
    first_page_last = min(r.id for r in jobruns.recent(limit=25))
    frag = admin.htmx(f"/jobs/?before={first_page_last}").get_data(as_text=True)
    assert "<html" not in frag and "p0" in frag


def test_a_partial_run_shows_its_errors_and_an_admin_retries_the_failed(login, make, breakage):
    customers = [make.customer() for _ in range(3)]
    broken = breakage.grant(customers[1].id)
    result = distribution.run(period="2031-04")
    assert result.status == "partial"
    url = f"/jobs/runs/{result.run_id}"

    finance = login("finance")
    page = finance.get(url).get_data(as_text=True)
    assert "partial" in page and "failing" in page and "injected failure" in page
    assert "Retry failed</button>" not in page  # look, not act
    assert finance.post(f"{url}/retry").status_code == 403
    index = finance.get("/jobs/").get_data(as_text=True)
    assert "retry failed</a>" in index

    admin = login("admin")
    assert "Retry failed</button>" in admin.get(url).get_data(as_text=True)
    assert admin.post(f"{url}/retry", csrf=False).status_code == 400  # CSRF
    db.session.rollback()
    assert db.session.get(JobRun, result.run_id).status == "partial"

    breakage.heal(broken)
    resp = admin.post(f"{url}/retry")
    assert resp.status_code == 302 and resp.headers["Location"].endswith(url)
    run = _wait_finished(result.run_id)
    assert (run.status, run.users_count, run.processed_count, run.error_count) == \
        ("succeeded", 3, 3, 0)
    assert [a["kind"] for a in run.details["attempts"]] == ["run", "retry"]
    audit = db.session.scalar(select(AuditLog).where(AuditLog.action == "jobs.retry"))
    assert audit.target_id == str(result.run_id) and audit.before["status"] == "partial"
    assert audit.after["started"] is True
    page = admin.get(url).get_data(as_text=True)
    assert "fixed" in page and "Retry failed</button>" not in page
    # A succeeded run is not retried: the route says so and changes nothing.
    again = admin.post(f"{url}/retry")
    assert again.status_code == 302
    assert "only a partial distribution run is retried" in admin.get(url).get_data(as_text=True)
    assert db.session.scalar(select(func.count(CreditGrant.id))
                             .where(CreditGrant.source == "distribution")) == 3


def test_preview_of_a_partial_period_offers_the_retry_of_the_missing_customers(login, make,
                                                                               breakage):
    customers = [make.customer() for _ in range(2)]
    breakage.grant(customers[0].id)
    result = distribution.run(period="2031-04")
    page = login("admin").get("/jobs/distribute_credits/preview?period=2031-04") \
        .get_data(as_text=True)
    assert f"run #{result.run_id}</a>, partial" in page and "Retry failed</button>" in page
    assert customers[0].email in page and customers[1].email not in page
