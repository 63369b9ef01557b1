"""A distribution run with customer errors ends `partial`; triggering the period again retries
exactly the customers still without their grant, under the same keys. Failures are injected with
real database triggers (tests/jobs/helpers.py), on SQLite and PostgreSQL."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from models import CreditGrant, JobRun, JobRunError, LedgerEntry, db
from services.jobs import attempts, distribution
from services.ledger import posting as ledger
from services.ledger import reconcile
from tests.api.test_cron import URL, basic

PERIOD = "2031-05"


@pytest.fixture
def cron_app(app):
    app.config.update(CRON_JOBS_USERNAME="cron", CRON_JOBS_PASSWORD="s3cret-pass")
    return app


def _keys(customer, period: str = PERIOD) -> int:
    return db.session.scalar(select(func.count(LedgerEntry.id)).where(
        LedgerEntry.idempotency_key == f"distribution:{period}:{customer.id}"))


def _counts(result) -> tuple:
    return (result.status, result.users_count, result.processed_count, result.error_count,
            result.expiry_error_count)


def test_a_failed_grant_makes_the_run_partial_and_a_retry_grants_exactly_the_missing(make, breakage):
    customers = [make.customer() for _ in range(4)]
    bad = customers[1]
    broken = breakage.grant(bad.id)

    first = distribution.run(period=PERIOD)
    assert _counts(first) == ("partial", 4, 3, 1, 0)
    assert [_keys(c) for c in customers] == [1, 0, 1, 1]
    err = db.session.scalar(select(JobRunError))
    assert err.customer_id == bad.id and "injected failure" in err.error

    # Still failing: the retry takes up that one customer only, and the run stays partial.
    second = distribution.run(period=PERIOD, trigger="cron")
    assert not second.already_done and second.attempt == "retry"
    assert (second.retried, second.fixed) == (1, 0)
    assert _counts(second) == ("partial", 4, 3, 1, 0)
    assert second.run_id == first.run_id

    breakage.heal(broken)
    third = distribution.run(period=PERIOD, trigger="cli")
    assert third.attempt == "retry" and (third.retried, third.fixed) == (1, 1)
    assert _counts(third) == ("succeeded", 4, 4, 0, 0)
    assert [_keys(c) for c in customers] == [1, 1, 1, 1]  # nobody granted twice
    assert [ledger.balance(c.id) for c in customers] == [50] * 4
    assert set(db.session.scalars(select(CreditGrant.job_run_id))) == {first.run_id}

    run = db.session.get(JobRun, first.run_id)
    assert [(a["kind"], a["trigger"], a["status"], a["attempted"], a["granted"], a["errors"])
            for a in run.details["attempts"]] == [
        ("run", "schedule", "partial", 4, 3, 1), ("retry", "cron", "partial", 1, 0, 1),
        ("retry", "cli", "succeeded", 1, 1, 0)]
    errors = list(db.session.scalars(select(JobRunError).order_by(JobRunError.id)))
    assert [e.customer_id for e in errors] == [bad.id, bad.id]
    assert set(attempts.error_states(run, errors).values()) == {"fixed"}

    # A succeeded run triggered again: already ran, nothing done.
    fourth = distribution.run(period=PERIOD, trigger="cron")
    assert fourth.already_done and _counts(fourth) == ("succeeded", 4, 4, 0, 0)
    assert db.session.scalar(select(func.count(JobRun.id))) == 1
    assert reconcile.run().ok


def test_errors_of_a_retry_that_still_fails_are_told_from_fixed_ones(make, breakage):
    a, b, ok = make.customer(), make.customer(), make.customer()
    broken_a, broken_b = breakage.grant(a.id), breakage.grant(b.id)
    first = distribution.run(period=PERIOD)
    assert _counts(first) == ("partial", 3, 1, 2, 0)

    breakage.heal(broken_a)
    retry = distribution.run(period=PERIOD)
    assert (retry.retried, retry.fixed) == (2, 1)
    assert _counts(retry) == ("partial", 3, 2, 1, 0)
    run = db.session.get(JobRun, first.run_id)
    errors = list(db.session.scalars(select(JobRunError).order_by(JobRunError.id)))
    states = attempts.error_states(run, errors)
    assert sorted((e.customer_id, states[e.id]) for e in errors) == sorted(
        [(a.id, "fixed"), (b.id, "failing"), (b.id, "failing")])
    assert (_keys(a), _keys(b), _keys(ok)) == (1, 0, 1)
    breakage.heal(broken_b)
    assert reconcile.run().ok


def test_a_failed_expiry_is_counted_on_its_own_and_holds_the_customer_back(make, breakage):
    plan = make.plan(interval="month", monthly_credits=1000, credit_expiry_days=31)
    due = [make.customer() for _ in range(3)]
    monthly = make.customer(plan=plan, subscription_status="active")  # due no grant
    old = {c.id: make.grant(c, credits=30, expires_in_days=-1) for c in [*due, monthly]}
    broken = [breakage.expiry(due[0].id), breakage.expiry(monthly.id)]

    first = distribution.run(period=PERIOD)
    # Three free customers are users; the monthly one's expiry error is not a user.
    assert _counts(first) == ("partial", 3, 2, 1, 2)
    assert [_keys(c) for c in due] == [0, 1, 1]  # held back: the expired bucket is still live
    db.session.refresh(old[due[0].id])
    assert old[due[0].id].remaining == 30
    kinds = sorted(attempts.kind_of(e) for e in db.session.scalars(select(JobRunError)))
    assert kinds == ["expiry", "expiry"]
    assert db.session.get(JobRun, first.run_id).details["expiry_errors"] == 2

    for b in broken:
        breakage.heal(b)
    retry = distribution.run(period=PERIOD)
    assert retry.attempt == "retry" and (retry.retried, retry.fixed) == (1, 2)
    assert _counts(retry) == ("succeeded", 3, 3, 0, 0)
    types = list(db.session.scalars(select(LedgerEntry.type).where(
        LedgerEntry.customer_id == due[0].id).order_by(LedgerEntry.id)))
    assert types == ["grant", "expiry", "grant"]  # expired first, then granted
    assert [ledger.balance(c.id) for c in due] == [50, 50, 50]
    assert ledger.balance(monthly.id) == 0
    assert reconcile.run().ok


def test_the_cli_dry_run_of_a_period_that_ran_tells_the_run_and_the_retry(app, make, breakage):
    customers = [make.customer() for _ in range(3)]
    broken = breakage.grant(customers[2].id)
    cli = app.test_cli_runner()

    out = cli.invoke(args=["run-job", "distribute_credits", "--period", PERIOD])
    assert out.exit_code == 1, out.output
    run_id = db.session.scalar(select(JobRun.id))
    assert f"distribute_credits {PERIOD} ran: run {run_id} partial; usersCount 3, " \
           "processedCount 2, errorCount 1, expiry errors 0" in out.output

    dry = cli.invoke(args=["run-job", "distribute_credits", "--dry-run", "--period", PERIOD])
    assert dry.exit_code == 0, dry.output
    assert f"Period {PERIOD} has run: run {run_id} partial; usersCount 3, processedCount 2, " \
           "errorCount 1" in dry.output
    assert "1 customers without their grant would be retried (50 credits)" in dry.output
    assert f"#{customers[2].id} " in dry.output and "would receive" not in dry.output

    breakage.heal(broken)
    again = cli.invoke(args=["run-job", "distribute_credits", "--period", PERIOD])
    assert again.exit_code == 0, again.output
    assert f"{PERIOD} retried: run {run_id} succeeded; usersCount 3, processedCount 3, " \
           "errorCount 0" in again.output
    assert "1 customers without their grant taken up, 1 fixed, 0 still failing" in again.output

    dry = cli.invoke(args=["run-job", "distribute_credits", "--dry-run", "--period", PERIOD])
    assert f"run {run_id} succeeded" in dry.output and "Nothing to retry" in dry.output
    done = cli.invoke(args=["run-job", "distribute_credits", "--period", PERIOD])
    assert f"{PERIOD} already ran: run {run_id} succeeded" in done.output and done.exit_code == 0
    assert [_keys(c) for c in customers] == [1, 1, 1]


def test_a_partial_run_is_retried_by_the_next_cron_call_without_granting_twice(cron_app, make, breakage):
    customers = [make.customer() for _ in range(3)]
    broken = breakage.grant(customers[0].id)
    client = cron_app.test_client()
    auth = basic("cron", "s3cret-pass")

    first = client.post(URL, headers=auth)
    assert first.status_code == 200
    assert first.get_json()["data"] == {"usersCount": 3, "processedCount": 2, "errorCount": 1}
    db.session.rollback()
    assert db.session.scalar(select(JobRun.status)) == "partial"

    still = client.post(URL, headers=auth)  # still failing: stays partial
    assert still.get_json()["data"] == {"usersCount": 3, "processedCount": 2, "errorCount": 1}
    db.session.rollback()
    assert db.session.scalar(select(JobRun.status)) == "partial"

    breakage.heal(broken)
    fixed = client.post(URL, headers=auth)
    assert fixed.get_json() == {"success": True, "data": {"usersCount": 3, "processedCount": 3,
                                                          "errorCount": 0}}
    again = client.post(URL, headers=auth)  # succeeded: already ran, the same counts
    assert again.get_json()["data"] == {"usersCount": 3, "processedCount": 3, "errorCount": 0}
    db.session.rollback()
    assert [ledger.balance(c.id) for c in customers] == [50, 50, 50]
    assert db.session.scalar(select(func.count()).select_from(CreditGrant)) == 3
    run = db.session.scalar(select(JobRun))
    assert run.status == "succeeded" and len(run.details["attempts"]) == 3


def test_the_cron_retry_under_gunicorn(app, make, breakage, live):
    """The same through a real gunicorn worker: the injected failure is in the database."""
    customers = [make.customer() for _ in range(2)]
    broken = breakage.grant(customers[1].id)
    db.session.commit()
    server = live(workers=1)
    auth = ("cron", "cron-test-password")  # LIVE_SECRETS

    first = server.post(URL, auth=auth)
    assert first.status_code == 200, server.log()[-2000:]
    assert first.json()["data"] == {"usersCount": 2, "processedCount": 1, "errorCount": 1}
    breakage.heal(broken)
    retry = server.post(URL, auth=auth)
    assert retry.json()["data"] == {"usersCount": 2, "processedCount": 2, "errorCount": 0}
    db.session.rollback()
    run = db.session.scalar(select(JobRun))
    assert run.status == "succeeded" and [a["kind"] for a in run.details["attempts"]] == \
        ["run", "retry"]
    assert [_keys(c, run.period) for c in customers] == [1, 1]
