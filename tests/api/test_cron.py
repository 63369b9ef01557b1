"""POST /api/distribute-credits: the four outcomes of seed 000's contract, on the real job."""
from __future__ import annotations

import base64

import pytest
from sqlalchemy import func, select, text

from models import CreditGrant, JobRun, db
from services.ledger import posting as ledger
from tests.helpers import assert_error

URL = "/api/distribute-credits"
CHALLENGE = 'Basic realm="Secure Area"'


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def cron_app(app):
    app.config.update(CRON_JOBS_USERNAME="cron", CRON_JOBS_PASSWORD="s3cret-pass")
    return app


def test_unset_credentials_are_500_misconfigured(app, make):
    make.customer()
    for user, password in ((None, None), ("cron", None), (None, "x"), ("", "")):
        app.config.update(CRON_JOBS_USERNAME=user, CRON_JOBS_PASSWORD=password)
        resp = app.test_client().post(URL, headers=basic("cron", "x"))
        assert_error(resp.status_code, resp.get_json(), "CRON_BASIC_AUTH_MISCONFIGURED", 500)
    assert db.session.scalar(select(func.count()).select_from(JobRun)) == 0


def test_wrong_or_missing_credentials_are_401_with_the_basic_challenge(cron_app, make):
    make.customer()
    client = cron_app.test_client()
    attempts = [{}, basic("cron", "wrong"), basic("someone", "s3cret-pass"), basic("", ""),
                {"Authorization": "Bearer s3cret-pass"}, {"Authorization": "Basic !!notbase64"},
                basic("cron", "s3cret-pass ")]
    for headers in attempts:
        resp = client.post(URL, headers=headers)
        assert_error(resp.status_code, resp.get_json(), "AUTH_UNAUTHORIZED", 401)
        assert resp.headers["WWW-Authenticate"] == CHALLENGE
    db.session.rollback()
    assert db.session.scalar(select(func.count()).select_from(JobRun)) == 0


def test_success_runs_the_distribution_once_and_answers_the_counts(cron_app, make):
    free = [make.customer() for _ in range(3)]
    client = cron_app.test_client()

    resp = client.post(URL, headers=basic("cron", "s3cret-pass"))

    assert resp.status_code == 200
    assert resp.get_json() == {"success": True, "data": {"usersCount": 3, "processedCount": 3,
                                                         "errorCount": 0}}
    db.session.rollback()
    assert [ledger.balance(c.id) for c in free] == [50, 50, 50]  # the free tier's default
    run = db.session.scalar(select(JobRun))
    assert (run.job, run.trigger, run.status) == ("distribute_credits", "cron", "succeeded")

    again = client.post(URL, headers=basic("cron", "s3cret-pass"))  # cron fired twice
    assert again.status_code == 200 and again.get_json()["data"]["processedCount"] == 3
    db.session.rollback()
    assert db.session.scalar(select(func.count()).select_from(CreditGrant)) == 3


def test_a_failing_job_is_500_retryable_and_the_retry_completes_it(cron_app, make):
    c = make.customer()
    client = cron_app.test_client()
    db.session.execute(text("ALTER TABLE credit_grants RENAME TO credit_grants_offline"))
    db.session.commit()
    try:
        resp = client.post(URL, headers=basic("cron", "s3cret-pass"))
    finally:
        db.session.rollback()
        db.session.execute(text("ALTER TABLE credit_grants_offline RENAME TO credit_grants"))
        db.session.commit()

    assert resp.status_code == 500
    assert resp.get_json() == {"success": False, "error": "Distribute credits job failed",
                               "code": "CREDITS_DISTRIBUTION_FAILED", "retryable": True}
    assert db.session.scalar(select(JobRun.status)) == "failed"

    retry = client.post(URL, headers=basic("cron", "s3cret-pass"))
    assert retry.status_code == 200 and retry.get_json()["data"]["processedCount"] == 1
    db.session.rollback()
    assert ledger.balance(c.id) == 50
